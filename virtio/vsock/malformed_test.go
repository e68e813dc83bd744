package vsock

import (
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// guestCounters are the Stats fields a malformed-packet test compares.
var guestCounters = []string{
	"TxPackets", "InvalidChains", "ShortPackets", "BadLength", "BadCID", "BadType",
	"BadOp", "UnknownConn", "CreditViolations", "RxBufferErrors", "ResetsSent",
}

// pkt builds a guest packet header (and payload) with this test's own
// encoding; len is the header's len field, independent of the payload.
func pkt(s *gstack, op uint16, src, dst uint32, length uint32, payload []byte) []byte {
	p := gpkt{srcCID: s.cid, dstCID: HostCID, srcPort: src, dstPort: dst, typ: typeStream, op: op,
		bufAlloc: 1 << 16, payload: payload}
	b := p.bytes()
	binary.LittleEndian.PutUint32(b[24:], length)
	return b
}

func TestMalformedPackets(t *testing.T) {
	tests := []struct {
		name string
		send func(s *gstack)
		want map[string]uint64 // counters that must be non-zero
		rsts int               // RSTs the guest must receive for no socket
	}{
		{
			name: "short header",
			send: func(s *gstack) { s.sendRaw(make([]byte, HeaderLen-1)) },
			want: map[string]uint64{"ShortPackets": 1},
		},
		{
			name: "len beyond buffer",
			send: func(s *gstack) { s.sendRaw(pkt(s, opRW, 1, 2, 100, make([]byte, 10))) },
			want: map[string]uint64{"BadLength": 1, "ResetsSent": 1},
			rsts: 1,
		},
		{
			name: "control packet with payload",
			send: func(s *gstack) { s.sendRaw(pkt(s, opRequest, 1, 2, 4, []byte("abcd"))) },
			want: map[string]uint64{"BadLength": 1, "ResetsSent": 1},
			rsts: 1,
		},
		{
			name: "wrong destination CID",
			send: func(s *gstack) {
				b := pkt(s, opRequest, 1, 2, 0, nil)
				binary.LittleEndian.PutUint64(b[8:], 3)
				s.sendRaw(b)
			},
			want: map[string]uint64{"BadCID": 1},
		},
		{
			name: "spoofed source CID",
			send: func(s *gstack) {
				b := pkt(s, opRequest, 1, 2, 0, nil)
				binary.LittleEndian.PutUint64(b[0:], s.cid+1)
				s.sendRaw(b)
			},
			want: map[string]uint64{"BadCID": 1},
		},
		{
			name: "seqpacket type",
			send: func(s *gstack) {
				b := pkt(s, opRequest, 1, 2, 0, nil)
				binary.LittleEndian.PutUint16(b[28:], 2)
				s.sendRaw(b)
			},
			want: map[string]uint64{"BadType": 1, "ResetsSent": 1},
			rsts: 1,
		},
		{
			name: "unknown ops",
			send: func(s *gstack) {
				s.sendRaw(pkt(s, 0, 1, 2, 0, nil))
				s.sendRaw(pkt(s, 8, 1, 3, 0, nil))
				s.sendRaw(pkt(s, 0xffff, 1, 4, 0, nil))
			},
			want: map[string]uint64{"BadOp": 3, "ResetsSent": 3},
			rsts: 3,
		},
		{
			name: "data for no connection",
			send: func(s *gstack) { s.sendRaw(pkt(s, opRW, 1, 2, 3, []byte("abc"))) },
			want: map[string]uint64{"TxPackets": 1, "UnknownConn": 1, "ResetsSent": 1},
			rsts: 1,
		},
		{
			name: "RST for no connection is not answered",
			send: func(s *gstack) { s.sendRaw(pkt(s, opRst, 1, 2, 0, nil)) },
			want: map[string]uint64{"TxPackets": 1},
		},
		{
			name: "buffer outside guest RAM",
			send: func(s *gstack) {
				s.txChain([]queue.Buffer{{Addr: 1 << 40, Len: HeaderLen}}, nil)
			},
			want: map[string]uint64{"InvalidChains": 1},
		},
		{
			name: "write-only tx chain",
			send: func(s *gstack) {
				s.txChain(nil, []queue.Buffer{s.tx.Buf(HeaderLen, nil)})
			},
			want: map[string]uint64{"ShortPackets": 1},
		},
		{
			name: "header split over three buffers is fine",
			send: func(s *gstack) {
				b := pkt(s, opRW, 7, 8, 5, []byte("hello"))
				s.txChain([]queue.Buffer{s.tx.Buf(10, b[:10]), s.tx.Buf(30, b[10:40]), s.tx.Buf(9, b[40:])}, nil)
			},
			want: map[string]uint64{"TxPackets": 1, "UnknownConn": 1, "ResetsSent": 1},
			rsts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, Config{}, gopts{})
			tt.send(s)
			if err := s.txDone(); err != nil {
				t.Fatal(err)
			}
			if err := s.waitFor("RSTs", func() bool { return len(s.stray) >= tt.rsts }); err != nil {
				t.Fatal(err)
			}
			want := map[string]uint64{}
			for _, n := range guestCounters {
				want[n] = tt.want[n]
			}
			if diff := cmp.Diff(want, pick(statsMap(s.dev.Stats()), guestCounters...)); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.stray) != tt.rsts {
				t.Errorf("guest got %d stray packets, want %d RSTs: %+v", len(s.stray), tt.rsts, s.stray)
			}
		})
	}
}

// established returns a guest-initiated connection and its host end.
func established(t *testing.T, s *gstack, port uint32) (*gconn, *netConn) {
	t.Helper()
	ln := hostListen(t, s, port)
	gc, err := s.dial(port)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := ln.AcceptUnix()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close() })
	return gc, hc
}

// TestProtocolViolations: a guest breaking the rules of a live connection
// gets it reset, and the host side sees it closed.
func TestProtocolViolations(t *testing.T) {
	tests := []struct {
		name string
		send func(s *gstack, c *gconn)
		want map[string]uint64
	}{
		{
			name: "data beyond credit",
			send: func(s *gstack, c *gconn) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.send(c, opRW, 0, make([]byte, 4097))
			},
			want: map[string]uint64{"CreditViolations": 1},
		},
		{
			name: "RESPONSE on an established connection",
			send: func(s *gstack, c *gconn) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.send(c, opResponse, 0, nil)
			},
			want: map[string]uint64{"BadOp": 1},
		},
		{
			name: "REQUEST on an established connection",
			send: func(s *gstack, c *gconn) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.send(c, opRequest, 0, nil)
			},
			want: map[string]uint64{"BadOp": 1},
		},
		{
			name: "data after SHUTDOWN(SEND)",
			send: func(s *gstack, c *gconn) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.send(c, opShutdown, shutSend, nil)
				s.send(c, opRW, 0, []byte("more"))
			},
			want: map[string]uint64{"BadOp": 1},
		},
		{
			name: "data longer than its buffer",
			send: func(s *gstack, c *gconn) {
				b := pkt(s, opRW, c.lport, c.rport, 100, make([]byte, 50))
				s.sendRaw(b)
			},
			want: map[string]uint64{"BadLength": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStack(t, Config{BufferSize: 4096}, gopts{txPayload: 8192})
			gc, hc := established(t, s, 7100)
			tt.send(s, gc)
			if err := gc.waitClosed(); err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(hc); len(got) != 0 || err != nil {
				t.Errorf("host after reset: %q, %v; want EOF", got, err)
			}
			st := statsMap(s.dev.Stats())
			for k, v := range tt.want {
				if st[k] != v {
					t.Errorf("%s = %d, want %d", k, st[k], v)
				}
			}
			if st["ResetsSent"] != 1 {
				t.Errorf("ResetsSent = %d, want 1", st["ResetsSent"])
			}
		})
	}
}

// TestSmallRxBuffers: rx chains too small for a header are returned empty
// and counted; the packet waits for a usable buffer.
func TestSmallRxBuffers(t *testing.T) {
	s := newStack(t, Config{}, gopts{holdRx: true})
	s.mu.Lock()
	for _, bufs := range [][]queue.Buffer{{s.rx.Buf(HeaderLen-1, nil)}, {s.rx.Buf(8, nil), s.rx.Buf(8, nil)}} {
		s.addRx(bufs)
	}
	s.rx.Kick()
	s.mu.Unlock()
	s.sendRaw(pkt(s, opRW, 1, 2, 0, nil)) // owed an RST
	if err := eventually("two bad rx buffers", func() bool { return s.dev.Stats().RxBufferErrors.Load() == 2 }); err != nil {
		t.Fatal(err)
	}
	s.postRx()
	if err := s.waitFor("the RST", func() bool { return len(s.stray) == 1 }); err != nil {
		t.Fatal(err)
	}
}

// TestConnectTimeout: a guest that never answers a REQUEST costs the host
// client its socket after ConnectTimeout, not forever.
func TestConnectTimeout(t *testing.T) {
	s := newStack(t, Config{ConnectTimeout: 20 * time.Millisecond}, gopts{})
	s.mu.Lock()
	s.ignoreRequests = true
	s.mu.Unlock()
	hc, err := dialUnix(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hc.Write([]byte("CONNECT 1024\n"))
	if got, err := io.ReadAll(hc); len(got) != 0 || err != nil {
		t.Errorf("host read %q, %v; want EOF", got, err)
	}
	// The guest is told with an RST after the REQUEST it ignored.
	if err := s.waitFor("the RST", func() bool { return len(s.stray) == 2 }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint16{opRequest, opRst}, []uint16{s.stray[0].op, s.stray[1].op}); diff != "" {
		t.Errorf("packets (-want +got):\n%s", diff)
	}
	if got := s.dev.Stats().ConnectTimeouts.Load(); got != 1 {
		t.Errorf("ConnectTimeouts = %d", got)
	}
}

func TestConnectionLimit(t *testing.T) {
	s := newStack(t, Config{MaxConnections: 2}, gopts{})
	hostListen(t, s, 7200)
	for i := range 3 {
		_, err := s.dial(7200)
		if (i < 2) != (err == nil) {
			t.Errorf("dial %d: %v", i, err)
		}
	}
	if got := s.dev.Stats().ConnLimit.Load(); got != 1 {
		t.Errorf("ConnLimit = %d", got)
	}
}
