package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":"task-1","cpus":2,"mem_mib":512,"disk_gib":10}`, `{"name":"A"}`, `{"cpus":1e99}`, `{"name":"a"}{}`, `nul`, `{"name":"a","name":"b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeCreate(bytes.NewReader(body))
		if err != nil {
			if AsError(err).Code != CodeInvalid {
				t.Fatalf("error code %q for a bad body", AsError(err).Code)
			}
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("accepted %+v that does not validate: %v", req, err)
		}
		// What is accepted survives a round trip unchanged.
		b, _ := json.Marshal(req)
		again, err := DecodeCreate(bytes.NewReader(b))
		if err != nil || again != req {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, err)
		}
	})
}

func FuzzDecodeExec(f *testing.F) {
	for _, s := range []string{`{"shell":"echo hi"}`, `{"argv":["ls","-l"],"env":["A=1"],"workdir":"/tmp","timeout_ms":5}`, `{"shell":"x","tty":true,"rows":24,"cols":80,"term":"xterm"}`, `{"shell":"x","stdin":"abc"}`, `{"argv":[]}`, `{"shell":"\u0000"}`} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, streaming bool) {
		req, err := DecodeExec(bytes.NewReader(body), streaming)
		if err != nil {
			if AsError(err).Code != CodeInvalid {
				t.Fatalf("error code %q for a bad body", AsError(err).Code)
			}
			return
		}
		if (len(req.Argv) == 0) == (req.Shell == "") {
			t.Fatalf("accepted %+v: want exactly one of argv and shell", req)
		}
		if req.TimeoutMs < 0 || req.Workdir != "" && !strings.HasPrefix(req.Workdir, "/") {
			t.Fatalf("accepted %+v", req)
		}
		b, _ := json.Marshal(req)
		again, err := DecodeExec(bytes.NewReader(b), streaming)
		if err != nil || !cmp.Equal(again, req, cmpopts.EquateEmpty()) {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, err)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	fw := NewFrameWriter(&b)
	fw.WriteFrame(FrameStdin, []byte("data"))
	fw.WriteFrame(FrameResize, ResizePayload(24, 80))
	fw.WriteFrame(FrameSignal, SignalPayload(2))
	fw.WriteFrame(FrameStdinClose, nil)
	f.Add(b.Bytes())
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{3, 0, 0, 0, 4, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			fr, err := ReadFrame(r, nil)
			if err != nil {
				return
			}
			if len(fr.Payload) > MaxFrame {
				t.Fatalf("payload of %d bytes", len(fr.Payload))
			}
			var out bytes.Buffer
			if err := NewFrameWriter(&out).WriteFrame(fr.Type, fr.Payload); err != nil {
				t.Fatal(err)
			}
			again, err := ReadFrame(&out, nil)
			if err != nil || again.Type != fr.Type || !bytes.Equal(again.Payload, fr.Payload) {
				t.Fatalf("frame %v does not round-trip: %v, %v", fr, again, err)
			}
		}
	})
}

// FuzzServer sends arbitrary requests to the handler over a stub backend:
// it must never panic, and every error must be a JSON error document with a
// 4xx status (the stub never fails internally).
func FuzzServer(f *testing.F) {
	seeds := []struct{ method, path, query, body string }{
		{"POST", "/v1/vms", "", `{"name":"n","cpus":1}`},
		{"POST", "/v1/vms/a/exec", "", `{"shell":"x"}`},
		{"GET", "/v1/vms/a/files", "path=/x", ""},
		{"PUT", "/v1/vms/a/files", "path=/x&mode=0644", "data"},
		{"DELETE", "/v1/vms", "name=a&name=b", ""},
		{"DELETE", "/v1/vms", "all=true", ""},
		{"GET", "/v1/vms/a/logs", "follow=false", ""},
		{"GET", "/v1/vms/%2e%2e", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, s.body)
	}
	f.Fuzz(func(t *testing.T, method, path, query, body string) {
		if !validMethod(method) || !strings.HasPrefix(path, "/") {
			return
		}
		u := &url.URL{Path: path, RawQuery: query}
		req, err := http.NewRequest(method, "http://boxd"+u.String(), strings.NewReader(body))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		NewServer(newStub("a", "b"), nil).ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s?%s: status %d: %s", method, path, query, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Code != http.StatusMovedPermanently {
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Code == "" {
				t.Fatalf("%s %s?%s: status %d with body %q", method, path, query, rec.Code, rec.Body)
			}
		}
	})
}

func validMethod(m string) bool {
	switch m {
	case "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS":
		return true
	}
	return false
}
