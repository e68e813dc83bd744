package net

import (
	"testing"

	"golang.org/x/sys/unix"
)

// discardBackend takes every frame and has none to give. Its fd is an
// eventfd that stays at 0: always writable, never readable. With record
// set it keeps copies of the frames.
type discardBackend struct {
	fd     int
	record bool
	frames [][]byte
	bytes  uint64
}

func newDiscard(t testing.TB, record bool) *discardBackend {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	return &discardBackend{fd: fd, record: record}
}

func (b *discardBackend) Fd() int                    { return b.fd }
func (b *discardBackend) Read(p []byte) (int, error) { return 0, unix.EAGAIN }
func (b *discardBackend) Close() error               { return unix.Close(b.fd) }
func (b *discardBackend) SetOffload(Offload) error   { return nil }

func (b *discardBackend) Writev(iov [][]byte) (int, error) {
	n := 0
	var f []byte
	for _, p := range iov {
		n += len(p)
		if b.record {
			f = append(f, p...)
		}
	}
	if b.record {
		b.frames = append(b.frames, f)
	}
	b.bytes += uint64(n)
	return n, nil
}
