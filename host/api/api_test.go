package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
		msg  string
	}{
		{"a", true, ""},
		{"task-1", true, ""},
		{"0abc", true, ""},
		{strings.Repeat("x", 63), true, ""},
		{"", false, "empty VM name"},
		{strings.Repeat("x", 64), false, "64 characters, the limit is 63"},
		{"-a", false, "starts or ends with '-'"},
		{"a-", false, "starts or ends with '-'"},
		{"Task", false, "uppercase"},
		{"a_b", false, `character "_"`},
		{"a.b", false, `character "."`},
		{"a b", false, `character " "`},
		{"é", false, "character"},
		{"a/b", false, "character"},
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		if (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
			t.Errorf("ValidName(%q) = %v, want ok=%v containing %q", tt.name, err, tt.ok, tt.msg)
		}
		if err != nil && AsError(err).Code != CodeInvalid {
			t.Errorf("ValidName(%q): code %q", tt.name, AsError(err).Code)
		}
	}
	if err := ValidName("Task"); !strings.Contains(err.Error(), `use "task"`) {
		t.Errorf("uppercase hint: %v", err)
	}
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		body string
		msg  string
	}{
		{`{"name":"a","cpus":1}`, ""},
		{``, "empty request body"},
		{`{"name":"a","bogus":1}`, `unknown field "bogus"`},
		{`{"name":"a"} {}`, "data after the JSON object"},
		{`{"name":1}`, "cannot unmarshal"},
		{`[1]`, "cannot unmarshal"},
		{`{"name":"a","pad":"` + strings.Repeat("x", MaxBody) + `"}`, "over 1048576 bytes"},
		{`{"cpus":-1}`, "cpus -1"},
		{`{"mem_mib":99999999}`, "mem_mib 99999999"},
		{`{"disk_gib":-3}`, "disk_gib -3"},
		{`{"name":"Bad"}`, "uppercase"},
	}
	for _, tt := range tests {
		_, err := DecodeCreate(strings.NewReader(tt.body))
		if (err == nil) != (tt.msg == "") || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
			t.Errorf("DecodeCreate(%.40q) = %v, want %q", tt.body, err, tt.msg)
		}
	}
}

func TestExecValidate(t *testing.T) {
	tests := []struct {
		req       ExecRequest
		streaming bool
		msg       string
	}{
		{ExecRequest{Shell: "true"}, false, ""},
		{ExecRequest{Argv: []string{"ls", "-l"}, Env: []string{"A=1", "B="}, Workdir: "/", TTY: true, Rows: 1, Cols: 1, Term: "xterm"}, true, ""},
		{ExecRequest{}, false, "no command"},
		{ExecRequest{Shell: "a", Argv: []string{"b"}}, false, "both argv and shell"},
		{ExecRequest{Argv: []string{""}}, false, "empty program name"},
		{ExecRequest{Shell: "a\x00b"}, false, "NUL"},
		{ExecRequest{Argv: []string{"a", "b\x00"}}, false, "NUL"},
		{ExecRequest{Shell: "x", Env: []string{"=v"}}, false, "want KEY=value"},
		{ExecRequest{Shell: "x", Env: []string{"K"}}, false, "want KEY=value"},
		{ExecRequest{Shell: "x", Workdir: "rel"}, false, "not absolute"},
		{ExecRequest{Shell: "x", TimeoutMs: -5}, false, "timeout_ms -5"},
		{ExecRequest{Shell: "x", TimeoutMs: MaxTimeoutMs + 1}, false, "timeout_ms"},
		{ExecRequest{Shell: "x", User: "a b"}, false, "bad user"},
		{ExecRequest{Shell: "x", TTY: true, Term: "x\ny"}, false, "bad term"},
		{ExecRequest{Shell: "x", Cols: 80}, false, "need tty"},
		{ExecRequest{Shell: "x", Stdin: "in"}, true, "stdin frames"},
		{ExecRequest{Argv: make([]string, maxArgs+1)}, false, "arguments, the limit"},
	}
	for _, tt := range tests {
		err := tt.req.Validate(tt.streaming)
		if (err == nil) != (tt.msg == "") || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
			t.Errorf("Validate(%+.60v) = %v, want %q", tt.req, err, tt.msg)
		}
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]uint32{"": 0o644, "0755": 0o755, "600": 0o600, "0": 0} {
		if m, err := ParseMode(s); err != nil || uint32(m) != want {
			t.Errorf("ParseMode(%q) = %o, %v", s, m, err)
		}
	}
	for _, s := range []string{"8", "01000", "rw", "-1", "0x1"} {
		if _, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) accepted", s)
		}
	}
}

func do(t *testing.T, h http.Handler, method, target, body string) (*http.Response, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader(body)))
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestRoutes(t *testing.T) {
	h := NewServer(newStub("a", "b"), t.Logf)
	tests := []struct {
		method, target, body string
		status               int
		want                 string // exact JSON, or text
	}{
		{"GET", "/v1/version", "", 200, `{"version":"stub","go_version":"","api":1}`},
		{"GET", "/v1/vms/a", "", 200, ""},
		{"GET", "/v1/vms/zz", "", 404, `{"error":{"code":"not_found","message":"no VM named \"zz\"","hint":"list VMs with ` + "`boxd ls`" + `"}}`},
		{"GET", "/v1/vms/Bad", "", 400, ""},
		{"PATCH", "/v1/vms/a", "", 405, `{"error":{"code":"invalid_argument","message":"method PATCH not allowed on /v1/vms/a"}}`},
		{"GET", "/v2/vms", "", 404, `{"error":{"code":"not_found","message":"no API route GET /v2/vms","hint":"see docs/api.md; this daemon serves /v1"}}`},
		{"POST", "/v1/vms", `{"name":"c","cpus":1}`, 201, ""},
		{"POST", "/v1/vms", `{"name":"a"}`, 409, ""},
		{"POST", "/v1/vms", `{"name":"d","x":1}`, 400, ""},
		{"POST", "/v1/vms/a/reboot", "", 200, ""},
		{"POST", "/v1/vms/a/exec", `{"shell":"hello"}`, 200, `{"output":"hello","stderr":"","exit_code":0,"timed_out":false,"duration_ms":0}`},
		{"POST", "/v1/vms/a/exec", `{"argv":["cat"],"stdin":"fed"}`, 200, `{"output":"fed","stderr":"","exit_code":1,"timed_out":false,"duration_ms":0}`},
		{"POST", "/v1/vms/a/exec", `{}`, 400, ""},
		{"GET", "/v1/vms/a/logs", "", 200, "console of a"},
		{"GET", "/v1/vms/a/logs?follow=maybe", "", 400, ""},
		{"GET", "/v1/vms/a/files?path=/etc/x", "", 200, "content of /etc/x"},
		{"GET", "/v1/vms/a/files?path=etc", "", 400, ""},
		{"PUT", "/v1/vms/a/files?path=/x&mode=0600", "12345", 200, `{"path":"/x","bytes":5}`},
		{"PUT", "/v1/vms/a/files?path=/x&mode=999", "1", 400, ""},
		{"DELETE", "/v1/vms", "", 400, ""},
		{"DELETE", "/v1/vms?all=true&name=a", "", 400, ""},
		{"DELETE", "/v1/vms?name=a&name=a", "", 400, ""},
		{"DELETE", "/v1/vms?name=a&name=zz", "", 200, `{"destroyed":["a"],"errors":[{"name":"zz","error":{"code":"not_found","message":"no VM named \"zz\"","hint":"list VMs with ` + "`boxd ls`" + `"}}]}`},
		{"DELETE", "/v1/vms/b", "", 200, `{"destroyed":["b"]}`},
		{"DELETE", "/v1/vms?all=true", "", 200, `{"destroyed":["c"]}`},
		{"GET", "/v1/vms", "", 200, `{"vms":[]}`},
	}
	for _, tt := range tests {
		resp, body := do(t, h, tt.method, tt.target, tt.body)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: status %d, want %d (%s)", tt.method, tt.target, resp.StatusCode, tt.status, body)
			continue
		}
		if tt.want != "" && strings.TrimSpace(string(body)) != tt.want {
			t.Errorf("%s %s:\n got %s\nwant %s", tt.method, tt.target, body, tt.want)
		}
		if resp.StatusCode >= 400 {
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" {
				t.Errorf("%s %s: error body %s is not a JSON error", tt.method, tt.target, body)
			}
		}
	}
	resp, _ := do(t, NewServer(newStub("a"), t.Logf), "GET", "/v1/vms/a/files?path=/f", "")
	if resp.Header.Get(HeaderFileMode) != "0600" || resp.Header.Get(HeaderFileSize) != "13" {
		t.Errorf("download headers %v", resp.Header)
	}
}

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	fw := NewFrameWriter(&b)
	big := bytes.Repeat([]byte("x"), MaxFrame+10)
	fw.Stream(FrameStdout).Write(big)
	fw.WriteFrame(FrameResize, ResizePayload(24, 80))
	fw.WriteFrame(FrameSignal, SignalPayload(15))
	fw.WriteFrame(FrameStdinClose, nil)
	var got []Frame
	for {
		f, err := ReadFrame(&b, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, Frame{f.Type, append([]byte(nil), f.Payload...)})
	}
	want := []Frame{
		{FrameStdout, big[:MaxFrame]}, {FrameStdout, big[MaxFrame:]},
		{FrameResize, []byte{0, 24, 0, 80}}, {FrameSignal, []byte{0, 0, 0, 15}}, {FrameStdinClose, []byte{}},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("frames (-want +got):\n%s", diff)
	}
	if r, c := ParseResize(got[2].Payload); r != 24 || c != 80 {
		t.Errorf("ParseResize = %d, %d", r, c)
	}
	for _, bad := range [][]byte{
		{99, 0, 0, 0, 0},                         // unknown type
		{1, 0x7f, 0, 0, 0},                       // too long
		{byte(FrameResize), 0, 0, 0, 3, 1, 2, 3}, // wrong control size
		{byte(FrameStdinClose), 0, 0, 0, 1, 0},
		{1, 0, 0, 0, 5, 1}, // truncated
	} {
		if _, err := ReadFrame(bytes.NewReader(bad), nil); err == nil || err == io.EOF {
			t.Errorf("ReadFrame(%v) = %v, want an error", bad, err)
		}
	}
	if err := fw.WriteFrame(FrameStdout, big); err == nil {
		t.Error("WriteFrame of an oversized payload succeeded")
	}
}
