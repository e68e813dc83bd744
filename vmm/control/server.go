package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Handler carries out requests in the monitor. Serve calls it from one
// goroutine at a time.
type Handler interface {
	// Do performs a validated request and fills resp's State and Snapshot.
	Do(req Request, resp *Response) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(Request, *Response) error

// Do calls f.
func (f HandlerFunc) Do(req Request, resp *Response) error { return f(req, resp) }

// Server answers requests on a listener until Close.
type Server struct {
	h  Handler
	ln net.Listener

	// reqMu serialises requests across connections, from reading one to
	// writing its response, so Close never cuts an answer off.
	reqMu sync.Mutex
	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Serve starts answering requests on ln in the background.
func Serve(ln net.Listener, h Handler) *Server {
	s := &Server{h: h, ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.conns == nil { // closed
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), MaxLine)
	enc := json.NewEncoder(c)
	for sc.Scan() {
		s.reqMu.Lock()
		if s.closed() {
			s.reqMu.Unlock()
			return
		}
		resp := s.do(sc.Bytes())
		err := enc.Encode(resp)
		s.reqMu.Unlock()
		if err != nil {
			return
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		enc.Encode(Response{Error: "request line too long"})
	}
}

func (s *Server) closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns == nil
}

func (s *Server) do(line []byte) Response {
	start := time.Now()
	var req Request
	var resp Response
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = "malformed request: " + err.Error()
		return resp
	}
	if err := req.Validate(); err != nil {
		resp.Error = err.Error()
		return resp
	}
	err := s.h.Do(req, &resp)
	resp.MonitorUs = time.Since(start).Microseconds()
	if err != nil {
		resp.OK, resp.Error = false, err.Error()
	} else {
		resp.OK = true
	}
	return resp
}

// Close stops accepting, drops every connection and waits for the
// server's goroutines. A request being handled finishes and is answered
// first, so a handler may end the monitor (a suspend) and the monitor then
// Close the server without losing the answer.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.reqMu.Lock()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.reqMu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

var _ io.Closer = (*Server)(nil)
