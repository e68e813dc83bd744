package vsock

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// While the transport is paused, a host client's connection waits: the
// guest sees no REQUEST until Resume.
func TestPauseHoldsHostConnect(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	l := s.listen(1024)
	s.tr.Pause()
	type res struct {
		c   *netConn
		err error
	}
	done := make(chan res, 1)
	go func() {
		c, _, err := hostConnect(s.path, 1024)
		done <- res{c, err}
	}()
	if err := eventually("the connection registered", func() bool { return s.dev.numConns() == 1 }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l:
		t.Fatal("guest saw a connection while the device was paused")
	default:
	}
	s.tr.Resume()
	<-l
	r := <-done
	if r.err != nil {
		t.Fatalf("host connect after resume: %v", r.err)
	}
	r.c.Close()
}

// A restored device drops every host connection and, once resumed, sends
// the guest a transport reset before anything else.
func TestRestoreResetsTransport(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	_, hc := established(t, s, 7001)
	s.tr.Pause()
	blob, err := s.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.dev.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(hc); len(got) != 0 || err != nil {
		t.Errorf("host socket after restore: %q, %v; want EOF", got, err)
	}
	s.mu.Lock()
	early := len(s.events)
	s.mu.Unlock()
	if early != 0 {
		t.Errorf("%d events before resume", early)
	}
	s.tr.Resume()
	if err := s.waitFor("the reset event", func() bool { return len(s.events) == 1 }); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]uint32{eventTransportReset}, s.events); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	// Listening and new connections work afterwards.
	l := s.listen(1024)
	echoGuest(t, s, l, 1)
	c, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatalf("connect after restore: %v", err)
	}
	c.Close()
}

func TestRestoreStateRejects(t *testing.T) {
	d, err := New(Config{GuestCID: 5, UDSPath: t.TempDir() + "/v.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	good, _ := d.SaveState()
	bad := func(f func(b []byte)) []byte { b := append([]byte(nil), good...); f(b); return b }
	for _, tc := range []struct {
		blob []byte
		want string
	}{
		{nil, "too short"},
		{bad(func(b []byte) { b[0] = 3 }), "unknown state version 3"},
		{good[:6], "want 10"},
		{bad(func(b []byte) { binary.LittleEndian.PutUint64(b[2:], 2) }), "CID 2"},
	} {
		if err := d.RestoreState(tc.blob); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RestoreState(%x) = %v, want an error with %q", tc.blob, err, tc.want)
		}
	}
	if got := d.Stats().TransportResets.Load(); got != 0 {
		t.Errorf("refused restores reset the transport %d times", got)
	}
	d.Close()
	if err := d.RestoreState(good); !errors.Is(err, ErrClosed) {
		t.Errorf("RestoreState after Close = %v, want ErrClosed", err)
	}
}

func FuzzRestoreState(f *testing.F) {
	f.Add(binary.LittleEndian.AppendUint64([]byte{1, 0}, 3))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		cid, err := decodeState(b)
		if err == nil && (cid < 3 || cid >= 0xffff_ffff || len(b) != stateLen) {
			t.Fatalf("accepted %x", b)
		}
	})
}
