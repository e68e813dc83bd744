package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// fakeAgent answers the handshake with hello, then runs script.
func fakeAgent(t testing.TB, hello wire.Hello, script func(conn net.Conn, r *wire.Reader)) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		r := wire.NewReader(b)
		if _, err := r.Next(); err != nil {
			return
		}
		p, _ := json.Marshal(hello)
		f, _ := wire.AppendFrame(nil, wire.Frame{Type: wire.TypeHello, Payload: p})
		if _, err := b.Write(f); err != nil {
			return
		}
		script(b, r)
	}()
	return a
}

func TestNewClientVersionMismatch(t *testing.T) {
	conn := fakeAgent(t, wire.Hello{Major: wire.Major + 1, Window: wire.DefaultWindow, Agent: "boxd-agent"},
		func(net.Conn, *wire.Reader) {})
	_, err := NewClient(context.Background(), conn)
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("NewClient: %v, want ErrVersion", err)
	}
	if !strings.Contains(err.Error(), "2.0") || !strings.Contains(err.Error(), "1.0") {
		t.Errorf("error does not name both versions: %v", err)
	}
}

func TestNewClientTimeout(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go io.Copy(io.Discard, b) // reads the hello, never answers
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewClient(ctx, a); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NewClient: %v, want deadline exceeded", err)
	}
}

// TestDialVsock plays the monitor's side of the hybrid vsock handshake.
func TestDialVsock(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []struct {
		name    string
		reply   string
		wantErr bool
	}{
		{"ok", "OK 1073741824\n", false},
		{"refused", "FAILURE\n", true},
		{"garbage port", "OK x\n", true},
		{"too long", strings.Repeat("O", 100) + "\n", true},
		{"closed", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				got <- line
				io.WriteString(c, tt.reply+"guest bytes")
			}()
			conn, err := DialVsock(context.Background(), sock, VsockPort)
			if line := <-got; line != "CONNECT 1024\n" {
				t.Errorf("monitor got %q", line)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("DialVsock: %v", err)
			}
			if err != nil {
				return
			}
			defer conn.Close()
			b, _ := io.ReadAll(conn)
			if string(b) != "guest bytes" {
				t.Errorf("stream after OK: %q", b)
			}
		})
	}
}

func FuzzParseConnectReply(f *testing.F) {
	for _, s := range []string{"OK 1024", "OK ", "OK 99999999999", "FAIL", "OK -1", "OK 0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseConnectReply(s); err == nil && !strings.HasPrefix(s, "OK ") {
			t.Fatalf("accepted %q", s)
		}
	})
}

// FuzzClientHostileAgent runs client calls against an agent that answers
// with arbitrary bytes after a valid handshake: the host must never panic or
// hang, only fail calls.
func FuzzClientHostileAgent(f *testing.F) {
	frame := func(fr wire.Frame) []byte { b, _ := wire.AppendFrame(nil, fr); return b }
	f.Add(frame(wire.Frame{Type: wire.TypeReply, Channel: 1, Payload: []byte(`{"result":{"pid":5}}`)}))
	f.Add(append(frame(wire.Frame{Type: wire.TypeReply, Channel: 1, Payload: []byte(`{}`)}),
		frame(wire.Frame{Type: wire.TypeData, Stream: 1, Channel: 1, Payload: []byte("{\"type\":\"port_open\"}\n")})...))
	f.Add(frame(wire.Frame{Type: wire.TypeClose, Channel: 1, Payload: []byte(`{"result":{"code":3}}`)}))
	f.Add(frame(wire.Frame{Type: wire.TypeData, Stream: 2, Channel: 1, Payload: []byte("x")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		conn := fakeAgent(t, wire.Hello{Major: wire.Major, Window: wire.DefaultWindow}, func(c net.Conn, r *wire.Reader) {
			go io.Copy(io.Discard, c)
			c.Write(b)
		})
		c, err := NewClient(context.Background(), conn)
		if err != nil {
			return
		}
		defer c.Close()
		ctx := context.Background()
		if p, err := c.Exec(ctx, ExecRequest{Argv: []string{"x"}, Stdin: strings.NewReader("in")}); err == nil {
			go io.Copy(io.Discard, p.Stderr)
			io.Copy(io.Discard, p.Stdout)
			p.Wait()
		}
		if s, err := c.Subscribe(ctx); err == nil {
			for {
				if _, err := s.Next(); err != nil {
					break
				}
			}
		}
		c.Ping(ctx)
	})
}
