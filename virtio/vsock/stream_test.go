package vsock

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// halfConn is either end of a stream.
type halfConn interface {
	io.Reader
	io.Writer
	CloseWrite() error
}

// exchange sends n pseudo-random bytes each way over (a, b) concurrently,
// half-closing after writing, and checks both sides receive exactly what the
// other sent (sha256).
func exchange(a, b halfConn, n int, seed uint64) error {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(w halfConn, seed uint64) [32]byte {
		h := sha256.New()
		r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
		buf := make([]byte, 64<<10)
		for left := n; left > 0; {
			p := buf[:min(left, len(buf))]
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			h.Write(p)
			if _, err := w.Write(p); err != nil {
				errs <- fmt.Errorf("write: %w", err)
				break
			}
			left -= len(p)
		}
		if err := w.CloseWrite(); err != nil {
			errs <- fmt.Errorf("close write: %w", err)
		}
		return [32]byte(h.Sum(nil))
	}
	recv := func(r io.Reader) ([32]byte, int64) {
		h := sha256.New()
		got, err := io.Copy(h, r)
		if err != nil {
			errs <- fmt.Errorf("read: %w", err)
		}
		return [32]byte(h.Sum(nil)), got
	}
	var sentA, sentB, gotA, gotB [32]byte
	var nA, nB int64
	wg.Add(4)
	go func() { defer wg.Done(); sentA = send(a, seed) }()
	go func() { defer wg.Done(); sentB = send(b, seed+1) }()
	go func() { defer wg.Done(); gotB, nB = recv(b) }()
	go func() { defer wg.Done(); gotA, nA = recv(a) }()
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	if nA != int64(n) || nB != int64(n) || sentA != gotB || sentB != gotA {
		return fmt.Errorf("streams differ: a→b %d bytes (sha256 match %v), b→a %d bytes (match %v), want %d",
			nB, sentA == gotB, nA, sentB == gotA, n)
	}
	return nil
}

// TestConcurrentStreams runs 8 host-initiated and 8 guest-initiated streams
// at once, 10 MB each way on each.
func TestConcurrentStreams(t *testing.T) {
	size := 10 << 20
	if testing.Short() {
		size = 1 << 20
	}
	const each = 8
	s := newStack(t, Config{}, gopts{})
	var wg sync.WaitGroup
	for i := range each {
		// One port per stream on each side, so the two ends pair up.
		l := s.listen(uint32(1024 + i))
		ln := hostListen(t, s, uint32(6000+i))
		wg.Add(2)
		go func() { // host → guest
			defer wg.Done()
			hc, _, err := hostConnect(s.path, uint32(1024+i))
			if err != nil {
				t.Errorf("hostConnect: %v", err)
				return
			}
			defer hc.Close()
			gc := <-l
			if err := exchange(hc, gc, size, uint64(2*i)); err != nil {
				t.Errorf("host-initiated stream %d: %v", i, err)
			}
			gc.Close()
		}()
		go func() { // guest → host
			defer wg.Done()
			gc, err := s.dial(uint32(6000 + i))
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			hc, err := ln.AcceptUnix()
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			defer hc.Close()
			if err := exchange(gc, hc, size, uint64(100+2*i)); err != nil {
				t.Errorf("guest-initiated stream %d: %v", i, err)
			}
			gc.Close()
		}()
	}
	wg.Wait()
	if err := eventually("all connections closed", func() bool { return s.dev.numConns() == 0 }); err != nil {
		t.Fatal(err)
	}
	st := statsMap(s.dev.Stats())
	want := map[string]uint64{
		"HostConnects": each, "GuestConnects": each,
		"TxBytes": uint64(2 * each * size), "RxBytes": uint64(2 * each * size),
	}
	if diff := cmp.Diff(want, pick(st, keys(want)...)); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// TestGuestCreditLimit: a guest advertising a small buffer never has more
// than that in flight, however fast the host writes, and the device asks for
// credit instead of waiting forever.
func TestGuestCreditLimit(t *testing.T) {
	const bufAlloc = 1000 // not a multiple of anything the device uses
	s := newStack(t, Config{}, gopts{bufAlloc: bufAlloc})
	l := s.listen(1024)
	hc, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	gc := <-l
	defer hc.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	go func() {
		hc.Write(data)
		hc.CloseWrite()
	}()
	// Let the device fill the guest's buffer completely before reading.
	if err := s.waitFor("a full guest buffer", func() bool { return uint32(gc.rbuf.Len()) == bufAlloc }); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return gc.Read(p[:min(len(p), 300)]) }))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want %d identical", len(got), len(data))
	}
	s.mu.Lock()
	maxIn := gc.maxInFlight
	s.mu.Unlock()
	if maxIn != bufAlloc {
		t.Errorf("most bytes in flight = %d, want exactly buf_alloc %d", maxIn, bufAlloc)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestDeviceCredit: the guest respects the device's small buffer; the device
// keeps it moving with CREDIT_UPDATEs as the host reads, and never buffers
// more than BufferSize.
func TestDeviceCredit(t *testing.T) {
	s := newStack(t, Config{BufferSize: 4096}, gopts{})
	ln := hostListen(t, s, 7000)
	gc, err := s.dial(7000)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go func() {
		gc.Write(data)
		gc.CloseWrite()
	}()
	got, err := io.ReadAll(hc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("host got %d bytes (%v), want %d identical", len(got), err, len(data))
	}
	st := statsMap(s.dev.Stats())
	if st["CreditViolations"] != 0 {
		t.Errorf("CreditViolations = %d", st["CreditViolations"])
	}
}
