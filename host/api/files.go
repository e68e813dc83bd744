package api

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Headers of a download.
const (
	HeaderFileMode = "X-Boxd-File-Mode" // permission bits in octal
	HeaderFileSize = "X-Boxd-File-Size" // the size when the file was opened
	// HeaderError is a trailer: set when a stream (download, logs) failed
	// after its first bytes, since the status was sent already.
	HeaderError = "X-Boxd-Error"
)

func parseBool(q, name string) (bool, error) {
	switch q {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	}
	return false, Errorf(CodeInvalid, "%s=%q: want true or false", name, q)
}

// flushWriter sends each write to the client at once (log follow).
type flushWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.wrote = true
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	follow, err := parseBool(r.URL.Query().Get("follow"), "follow")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Trailer", HeaderError)
	fw := &flushWriter{w: w, rc: http.NewResponseController(w)}
	err = s.b.Logs(r.Context(), r.PathValue("name"), follow, fw)
	if err == nil || r.Context().Err() != nil {
		return
	}
	if !fw.wrote {
		w.Header().Del("Trailer")
		s.fail(w, r, err)
		return
	}
	w.Header().Set(HeaderError, oneLine(AsError(err).Error()))
}

func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if err := ValidPath(path); err != nil {
		s.fail(w, r, err)
		return
	}
	rc, info, err := s.b.ReadFile(r.Context(), r.PathValue("name"), path)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(HeaderFileMode, fmt.Sprintf("%04o", info.Mode&0o7777))
	h.Set(HeaderFileSize, strconv.FormatInt(info.Size, 10))
	h.Set("Trailer", HeaderError)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil && r.Context().Err() == nil {
		h.Set(HeaderError, oneLine(AsError(err).Error()))
	}
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	path := q.Get("path")
	if err := ValidPath(path); err != nil {
		s.fail(w, r, err)
		return
	}
	mode, err := ParseMode(q.Get("mode"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := s.b.WriteFile(r.Context(), r.PathValue("name"), path, mode, r.Body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, FileResult{Path: path, Bytes: n})
}
