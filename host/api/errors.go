package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes: stable strings clients may test.
const (
	CodeInvalid     = "invalid_argument"
	CodeNotFound    = "not_found"
	CodeExists      = "already_exists"
	CodeQuota       = "quota_exceeded"
	CodeState       = "failed_precondition" // the VM is not in a state that allows it
	CodeUnavailable = "unavailable"         // the guest or a resource did not answer in time
	CodeInternal    = "internal"
)

// Error is every failure the API reports, as {"error": {...}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return e.Message
	}
	return e.Message + " (" + e.Hint + ")"
}

// Status is the HTTP status that carries e.
func (e *Error) Status() int {
	switch e.Code {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeExists, CodeState:
		return http.StatusConflict
	case CodeQuota:
		return http.StatusForbidden
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Errorf returns an *Error of code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithHint returns e with a hint.
func (e *Error) WithHint(format string, args ...any) *Error {
	c := *e
	c.Hint = fmt.Sprintf(format, args...)
	return &c
}

// NotFound is the error for a VM that does not exist.
func NotFound(name string) *Error {
	return Errorf(CodeNotFound, "no VM named %q", name).WithHint("list VMs with `boxd ls`")
}

// AsError turns any error into an *Error: an *Error in err's chain as it is,
// anything else as an internal error carrying err's text.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

type errorBody struct {
	Error *Error `json:"error"`
}
