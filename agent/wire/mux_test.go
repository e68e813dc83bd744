package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"testing"
)

// pair connects a client Mux to a server Mux whose Accept is accept.
func pair(t testing.TB, accept func(*Channel, Open)) (*Mux, *Mux) {
	t.Helper()
	a, b := net.Pipe()
	type res struct {
		m   *Mux
		err error
	}
	sc := make(chan res, 1)
	go func() {
		m, err := Handshake(context.Background(), b, Config{Role: Server, Accept: accept})
		sc <- res{m, err}
	}()
	cm, err := Handshake(context.Background(), a, Config{Role: Client})
	if err != nil {
		t.Fatal(err)
	}
	s := <-sc
	if s.err != nil {
		t.Fatal(s.err)
	}
	t.Cleanup(func() { cm.Close(); s.m.Close() })
	return cm, s.m
}

// fakePeer is the far end of a client Mux, driven by hand.
func fakePeer(t testing.TB, script func(conn net.Conn, r *Reader)) *Mux {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		r := NewReader(b)
		if _, err := r.Next(); err != nil {
			return
		}
		if err := writeHello(b, Hello{Major: Major, Window: DefaultWindow}); err != nil {
			return
		}
		script(b, r)
	}()
	m, err := Handshake(context.Background(), a, Config{Role: Client})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func writeFrames(conn net.Conn, frames ...Frame) error {
	var b []byte
	for _, f := range frames {
		var err error
		if b, err = AppendFrame(b, f); err != nil {
			return err
		}
	}
	_, err := conn.Write(b)
	return err
}

// TestFlowControl: a sender stops at the receiver's window and resumes as the
// reader consumes; nothing is lost or reordered.
func TestFlowControl(t *testing.T) {
	const total = 3*DefaultWindow + 12345
	want := make([]byte, total)
	for i := range want {
		want[i] = byte(i * 7)
	}
	written := make(chan error, 1)
	var srvCh *Channel
	ready := make(chan struct{})
	cm, _ := pair(t, func(ch *Channel, _ Open) {
		srvCh = ch
		close(ready)
		ch.Reply([]byte(`{}`))
		_, err := ch.Writer(StreamStdout).Write(want)
		written <- err
		ch.Writer(StreamStdout).CloseWrite()
		ch.Close([]byte(`{}`))
	})
	ch, err := cm.Open("x", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-ready
	if msg, err := ch.Next(context.Background()); err != nil || msg.Type != TypeReply {
		t.Fatalf("Next: %v %v", msg, err)
	}
	// Without reading, the sender runs out of credit with exactly one window
	// buffered here, and its Write has not returned.
	ss := srvCh.Writer(StreamStdout)
	rs := ch.Reader(StreamStdout)
	for {
		ss.mu.Lock()
		c := ss.credit
		ss.mu.Unlock()
		rs.mu.Lock()
		buffered := DefaultWindow - rs.avail
		rs.mu.Unlock()
		if c == 0 && buffered == DefaultWindow {
			break
		}
		if c < 0 || buffered > DefaultWindow {
			t.Fatalf("credit %d, buffered %d", c, buffered)
		}
	}
	select {
	case err := <-written:
		t.Fatalf("Write returned (%v) with the window full", err)
	default:
	}
	got, err := io.ReadAll(rs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got %d bytes, want %d (equal=%v)", len(got), len(want), bytes.Equal(got, want))
	}
	if err := <-written; err != nil {
		t.Error(err)
	}
	if msg, err := ch.Next(context.Background()); err != nil || msg.Type != TypeClose {
		t.Errorf("Next: %v %v", msg, err)
	}
}

func TestPeerViolations(t *testing.T) {
	data := func(ch uint32, n int) Frame {
		return Frame{Type: TypeData, Stream: StreamStdout, Channel: ch, Payload: make([]byte, n)}
	}
	tests := []struct {
		name   string
		frames []Frame
	}{
		{"window exceeded", func() []Frame {
			var fs []Frame
			for i := 0; i <= DefaultWindow/MaxDataChunk; i++ {
				fs = append(fs, data(1, MaxDataChunk))
			}
			return fs
		}()},
		{"data on inbound stream", []Frame{{Type: TypeData, Stream: StreamStdin, Channel: 1, Payload: []byte{1}}}},
		{"data after eof", []Frame{{Type: TypeEOF, Stream: 1, Channel: 1}, data(1, 1)}},
		{"two replies", []Frame{{Type: TypeReply, Channel: 1, Payload: []byte("{}")}, {Type: TypeReply, Channel: 1, Payload: []byte("{}")}}},
		{"open to client", []Frame{{Type: TypeOpen, Channel: 5, Payload: []byte(`{"op":"x"}`)}}},
		{"second hello", []Frame{{Type: TypeHello, Payload: []byte("{}")}}},
		{"window overflow", []Frame{{Type: TypeWindow, Stream: 0, Channel: 1, Payload: []byte{0xFF, 0xFF, 0xFF, 0xFF}}}},
		{"control to client", []Frame{{Type: TypeControl, Channel: 1, Payload: []byte("{}")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fakePeer(t, func(conn net.Conn, r *Reader) {
				if _, err := r.Next(); err != nil { // the Open
					return
				}
				go io.Copy(io.Discard, conn)
				writeFrames(conn, tt.frames...)
				<-make(chan struct{}) // hold the connection open: the client must end it
			})
			if _, err := m.Open("x", nil); err != nil {
				t.Fatal(err)
			}
			<-m.Done()
			if !errors.Is(m.Err(), ErrProtocol) {
				t.Errorf("connection ended with %v, want ErrProtocol", m.Err())
			}
		})
	}
}

func TestVersionMismatch(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		r := NewReader(b)
		r.Next()
		writeHello(b, Hello{Major: Major + 1, Minor: 3, Window: DefaultWindow, Agent: "future"})
	}()
	_, err := Handshake(context.Background(), a, Config{Role: Client})
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("Handshake: %v, want ErrVersion", err)
	}
}

func TestFramesForEndedChannelsDropped(t *testing.T) {
	m := fakePeer(t, func(conn net.Conn, r *Reader) {
		r.Next() // Open 1
		writeFrames(conn,
			Frame{Type: TypeClose, Channel: 1, Payload: []byte(`{}`)},
			Frame{Type: TypeData, Stream: 1, Channel: 1, Payload: []byte("late")},
			Frame{Type: TypeReply, Channel: 99, Payload: []byte(`{}`)},
		)
		r.Next() // Open 2
		writeFrames(conn, Frame{Type: TypeClose, Channel: 2, Payload: []byte(`{"result":1}`)})
		io.Copy(io.Discard, conn)
	})
	for i := 0; i < 2; i++ {
		ch, err := m.Open("x", nil)
		if err != nil {
			t.Fatal(err)
		}
		if msg, err := ch.Next(context.Background()); err != nil || msg.Type != TypeClose {
			t.Fatalf("channel %d: %v %v", ch.ID(), msg, err)
		}
	}
	if m.Err() != nil {
		t.Errorf("connection failed: %v", m.Err())
	}
}

// fuzzFrames turns fuzz input into a frame stream: mostly valid frames (so
// the fuzzer reaches the Mux logic), with the raw bytes appended.
func fuzzFrames(b []byte) []byte {
	var out []byte
	for len(b) >= 4 {
		typ := Type(b[0]%uint8(typeLimit-1)) + 1
		f := Frame{Type: typ, Channel: uint32(b[1] % 4)}
		n := int(b[2]) % 8
		b = b[3:]
		if n > len(b) {
			n = len(b)
		}
		f.Payload, b = b[:n], b[n:]
		switch typ {
		case TypeData, TypeEOF, TypeWindow:
			f.Stream = Stream(f.Channel % NumStreams)
		}
		if typ == TypeWindow {
			f.Payload = []byte{0, 0, 0, byte(n + 1)}
		}
		if typ == TypeEOF {
			f.Payload = nil
		}
		if typ == TypeHello {
			f.Channel = 0
		}
		if typ == TypeReply || typ == TypeClose || typ == TypeOpen || typ == TypeControl {
			f.Payload = []byte(`{"op":"x","result":{"pid":1}}`)[:min(len(`{"op":"x","result":{"pid":1}}`), 5+n*3)]
		}
		out, _ = AppendFrame(out, f)
	}
	return append(out, b...)
}

// FuzzClientMux feeds a client hostile frames after a valid handshake: it
// must end with an error or keep going, never panic or hang.
func FuzzClientMux(f *testing.F) {
	f.Add([]byte{3, 1, 2, 'x', 'y', 4, 1, 5, 1, 2, 3, 4, 5, 8, 1, 0})
	f.Add([]byte{4, 2, 7, 0, 0, 0, 0, 0, 0, 0, 6, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		stream := fuzzFrames(b)
		m := fakePeer(t, func(conn net.Conn, r *Reader) {
			go io.Copy(io.Discard, conn)
			conn.Write(stream)
		})
		for i := 0; i < 3; i++ {
			ch, err := m.Open("x", nil)
			if err != nil {
				return
			}
			go io.Copy(io.Discard, ch.Reader(StreamStdout))
			go ch.Writer(StreamStdin).Write([]byte("in"))
			ch.Next(context.Background())
		}
	})
}

// FuzzServerMux feeds a server hostile frames after a valid handshake.
func FuzzServerMux(f *testing.F) {
	f.Add([]byte{1, 1, 7, '{', '"', 'o', 'p', '"', ':', '1', 3, 1, 2, 'a', 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c := net.Pipe()
		accept := func(ch *Channel, o Open) {
			io.Copy(ch.Writer(StreamStdout), ch.Reader(StreamStdin))
			ch.Close([]byte(`{}`))
		}
		go func() {
			defer c.Close()
			writeHello(c, Hello{Major: Major, Window: DefaultWindow})
			r := NewReader(c)
			r.Next()
			go io.Copy(io.Discard, c)
			c.Write(fuzzFrames(b))
		}()
		m, err := Handshake(context.Background(), a, Config{Role: Server, Accept: accept})
		if err != nil {
			return
		}
		<-m.Done()
	})
}

func TestResultErrors(t *testing.T) {
	err := DecodeResult(EncodeResult(nil, Errorf(CodeNotFound, "nope")), nil)
	var we *Error
	if !errors.As(err, &we) || we.Code != CodeNotFound || err.Error() != "nope" {
		t.Errorf("DecodeResult: %v", err)
	}
	var v struct{ A int }
	if err := DecodeResult(EncodeResult(map[string]int{"A": 5}, nil), &v); err != nil || v.A != 5 {
		t.Errorf("DecodeResult: %v %v", v, err)
	}
	if err := DecodeResult([]byte("{"), nil); !errors.Is(err, ErrProtocol) {
		t.Errorf("DecodeResult(garbage): %v", err)
	}
	b, _ := json.Marshal(Result{Result: json.RawMessage(`"x"`)})
	if err := DecodeResult(b, &v); !errors.Is(err, ErrProtocol) {
		t.Errorf("DecodeResult(wrong type): %v", err)
	}
}

// TestReplyCloseOneWrite: ReplyClose sends the Reply and the Close in a
// single write (one vsock packet), and the client sees both, in order.
func TestReplyCloseOneWrite(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go Handshake(context.Background(), b, Config{Role: Server, Accept: func(ch *Channel, o Open) {
		ch.ReplyClose([]byte(`{"result":{"pid":7}}`), []byte(`{"result":{"code":0}}`))
	}})
	if err := writeHello(a, Hello{Major: Major, Window: DefaultWindow}); err != nil {
		t.Fatal(err)
	}
	r := NewReader(a)
	if _, err := readHello(r); err != nil {
		t.Fatal(err)
	}
	if err := writeFrames(a, Frame{Type: TypeOpen, Channel: 1, Payload: []byte(`{"op":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	// net.Pipe hands one Write to Reads whole (up to the buffer): both
	// frames in one Read means one write.
	buf := make([]byte, 4096)
	n, err := a.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var got []Frame
	fr := NewReader(bytes.NewReader(buf[:n]))
	for {
		f, err := fr.Next()
		if err != nil {
			break
		}
		got = append(got, Frame{Type: f.Type, Channel: f.Channel, Payload: append([]byte(nil), f.Payload...)})
	}
	want := []Frame{
		{Type: TypeReply, Channel: 1, Payload: []byte(`{"result":{"pid":7}}`)},
		{Type: TypeClose, Channel: 1, Payload: []byte(`{"result":{"code":0}}`)},
	}
	if len(got) != len(want) {
		t.Fatalf("one read gave %d frames %+v, want Reply and Close", len(got), got)
	}
	for i := range want {
		if got[i].Type != want[i].Type || got[i].Channel != want[i].Channel || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Errorf("frame %d = %v %d %s, want %v %d %s", i, got[i].Type, got[i].Channel, got[i].Payload, want[i].Type, want[i].Channel, want[i].Payload)
		}
	}
}

// TestReplyCloseClient: a client gets the Reply, then the Close, from one
// ReplyClose.
func TestReplyCloseClient(t *testing.T) {
	cm, _ := pair(t, func(ch *Channel, o Open) {
		ch.ReplyClose([]byte(`{"result":1}`), []byte(`{"result":2}`))
	})
	ch, err := cm.Open("x", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Msg{{TypeReply, []byte(`{"result":1}`)}, {TypeClose, []byte(`{"result":2}`)}} {
		msg, err := ch.Next(context.Background())
		if err != nil || msg.Type != want.Type || !bytes.Equal(msg.Payload, want.Payload) {
			t.Errorf("Next = %v %s, %v; want %v %s", msg.Type, msg.Payload, err, want.Type, want.Payload)
		}
	}
}
