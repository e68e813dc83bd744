package eventfd

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSignalDrainShareCounterThroughDup(t *testing.T) {
	fd, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	d, err := Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(d)
	if Drain(d) {
		t.Fatal("a fresh eventfd drained as signalled")
	}
	for range 3 {
		if err := Signal(fd); err != nil {
			t.Fatal(err)
		}
	}
	if !Drain(d) {
		t.Fatal("a signal on the original was not seen on the duplicate")
	}
	if Drain(fd) {
		t.Fatal("Drain left the counter non-zero")
	}
}

func TestDupRefusesWhatIsNotANonBlockingEventfd(t *testing.T) {
	blocking, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(blocking)
	if d, err := Dup(blocking); err == nil {
		unix.Close(d)
		t.Fatal("Dup accepted a blocking eventfd")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := unix.SetNonblock(int(r.Fd()), true); err != nil {
		t.Fatal(err)
	}
	if d, err := Dup(int(r.Fd())); err == nil {
		unix.Close(d)
		t.Fatal("Dup accepted a pipe")
	}
	if _, err := Dup(1 << 20); err == nil {
		t.Fatal("Dup accepted a closed fd")
	}
}

func TestWakerAfterClose(t *testing.T) {
	w, err := NewWaker()
	if err != nil {
		t.Fatal(err)
	}
	w.Wake()
	if !Drain(w.Fd()) {
		t.Fatal("Wake did not signal the eventfd")
	}
	w.Wake()
	w.Drain()
	if Drain(w.Fd()) {
		t.Fatal("Drain left a wake-up pending")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Wake() // harmless after Close
	w.Drain()
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
