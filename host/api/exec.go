package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
)

// MaxOutput bounds each of stdout and stderr in a non-streamed exec; the
// rest is read and dropped (Truncated says so). Stream to get it all.
const MaxOutput = 16 << 20

// IsUpgrade reports whether r asks to open a streamed exec session.
func IsUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), UpgradeProtocol)
}

func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	streaming := IsUpgrade(r)
	req, err := DecodeExec(r.Body, streaming)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.b.Exec(r.Context(), r.PathValue("name"), req, streaming)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer p.Close()
	if streaming {
		s.session(w, r, p)
		return
	}
	var out, errs capBuffer
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(&out, p.Stdout()) })
	wg.Go(func() { io.Copy(&errs, p.Stderr()) })
	res, err := p.Wait()
	wg.Wait()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res.Output, res.Stderr = out.b.String(), errs.b.String()
	res.Truncated = out.dropped || errs.dropped
	writeJSON(w, http.StatusOK, res)
}

// capBuffer keeps the first MaxOutput bytes written to it and drops the rest,
// still accepting them so the command is never stalled.
type capBuffer struct {
	b       bytes.Buffer
	dropped bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	room := MaxOutput - c.b.Len()
	if len(p) > room {
		c.b.Write(p[:room])
		c.dropped = true
		return len(p), nil
	}
	return c.b.Write(p)
}

// session runs a streamed exec on the hijacked connection: stdin, resize and
// signal frames in; stdout and stderr frames out, then one exit (or error)
// frame. A client that goes away kills the command.
func (s *Server) session(w http.ResponseWriter, r *http.Request, p Process) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		s.fail(w, r, Errorf(CodeInternal, "connection cannot be upgraded"))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		s.logf("exec: hijack: %v", err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", UpgradeProtocol)
	if err := brw.Flush(); err != nil {
		return
	}
	fw := NewFrameWriter(conn)

	go func() {
		// Any end of the client's frames before the exit frame — EOF, an
		// error, a protocol violation — means nobody is listening: kill.
		readClientFrames(brw.Reader, p)
		p.Close()
	}()

	var wg sync.WaitGroup
	pump := func(t FrameType, src io.Reader) {
		if _, err := io.Copy(fw.Stream(t), src); err != nil {
			p.Close() // the client cannot take output: stop the command rather than stall it
		}
	}
	wg.Go(func() { pump(FrameStdout, p.Stdout()) })
	wg.Go(func() { pump(FrameStderr, p.Stderr()) })
	res, err := p.Wait()
	wg.Wait()
	if err != nil {
		e := AsError(err)
		if e.Code == CodeInternal {
			s.logf("exec %s: %v", r.PathValue("name"), err)
		}
		b, _ := json.Marshal(e)
		fw.WriteFrame(FrameError, b)
		return
	}
	res.Output, res.Stderr = "", ""
	b, _ := json.Marshal(res)
	fw.WriteFrame(FrameExit, b)
}

// readClientFrames applies the client's frames to p until the client's side
// ends (closed, broken, or a frame it may not send) and says why. Every
// return means the client is gone.
func readClientFrames(r io.Reader, p Process) error {
	buf := make([]byte, MaxFrame)
	stdin := p.Stdin()
	for {
		f, err := ReadFrame(r, buf)
		if err != nil {
			return err
		}
		switch f.Type {
		case FrameStdin:
			if stdin == nil {
				return fmt.Errorf("stdin frame, but stdin is not open")
			}
			if _, err := stdin.Write(f.Payload); err != nil {
				// The command closed its stdin or ended: later input has
				// nowhere to go, which is not the client's fault.
				stdin = nil
			}
		case FrameStdinClose:
			if stdin != nil {
				stdin.Close()
			}
		case FrameResize:
			rows, cols := ParseResize(f.Payload)
			if rows == 0 || cols == 0 {
				return fmt.Errorf("resize to %dx%d", rows, cols)
			}
			p.Resize(rows, cols)
		case FrameSignal:
			sig := ParseSignal(f.Payload)
			if sig < 1 || sig > 64 {
				return fmt.Errorf("signal %d", sig)
			}
			p.Signal(syscall.Signal(sig))
		default:
			return fmt.Errorf("frame type %d from a client", f.Type)
		}
	}
}
