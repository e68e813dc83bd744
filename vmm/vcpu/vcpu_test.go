package vcpu

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/boxd-dev/boxd/internal/testguest"
	"github.com/boxd-dev/boxd/vmm/kvm"
)

// recBus records writes and signals when the test guest reports done.
type recBus struct {
	mu     sync.Mutex
	result uint64
	done   chan struct{}
	reads  int
}

func (b *recBus) Read(addr uint64, data []byte) bool {
	b.mu.Lock()
	b.reads++
	b.mu.Unlock()
	return false
}

func (b *recBus) Write(addr uint64, data []byte) bool {
	switch addr {
	case testguest.ResultAddr:
		b.mu.Lock()
		b.result = binary.LittleEndian.Uint64(data)
		b.mu.Unlock()
	case testguest.DoneAddr:
		close(b.done)
	default:
		return false
	}
	return true
}

func newGuest(t *testing.T, code []byte) *testguest.Guest {
	t.Helper()
	g, err := testguest.New(code, 3)
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// TestRunPauseResumeStop runs a guest that reports through MMIO and then spins
// forever: only a kick can get it out of KVM_RUN.
func TestRunPauseResumeStop(t *testing.T) {
	g := newGuest(t, testguest.SumLoop(1000))
	bus := &recBus{done: make(chan struct{})}
	v := New(g.VCPU, bus, bus)
	stopped := make(chan Stop, 1)
	go func() { stopped <- v.Run() }()

	<-bus.done
	if bus.result != testguest.Sum(1000) {
		t.Fatalf("result = %d, want %d", bus.result, testguest.Sum(1000))
	}
	// The guest is now spinning in "jmp $".
	for range 3 {
		if err := v.Pause(); err != nil {
			t.Fatal(err)
		}
		v.WaitPaused()
		if err := v.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.RequestStop(); err != nil {
		t.Fatal(err)
	}
	s := <-stopped
	if s.Kind != StopRequested || s.Err != nil {
		t.Fatalf("stop = %+v, want requested", s)
	}
	// The spin loop is the last two bytes of the program.
	if want := uint64(testguest.CodeAddr + len(testguest.SumLoop(1000)) - 2); s.RIP != want {
		t.Errorf("stopped at rip %#x, want the spin loop at %#x", s.RIP, want)
	}
}

// TestStopWhilePaused: a stop request releases a parked vCPU.
func TestStopWhilePaused(t *testing.T) {
	g := newGuest(t, testguest.SumLoop(10))
	bus := &recBus{done: make(chan struct{})}
	v := New(g.VCPU, bus, bus)
	stopped := make(chan Stop, 1)
	go func() { stopped <- v.Run() }()
	<-bus.done
	v.Pause()
	v.WaitPaused()
	v.RequestStop()
	if s := <-stopped; s.Kind != StopRequested {
		t.Fatalf("stop = %+v", s)
	}
}

// TestTripleFault: a guest that faults with no IDT ends with StopShutdown, and an
// unclaimed MMIO write is counted, not fatal.
func TestTripleFault(t *testing.T) {
	// mov rbx, 0x20000000; mov [rbx], eax (unclaimed MMIO); ud2
	code := []byte{0x48, 0xbb, 0, 0, 0, 0x20, 0, 0, 0, 0, 0x89, 0x03, 0x0f, 0x0b}
	g := newGuest(t, code)
	bus := &recBus{done: make(chan struct{})}
	v := New(g.VCPU, bus, bus)
	s := v.Run()
	if s.Kind != StopShutdown {
		t.Fatalf("stop = %+v, want triple fault", s)
	}
	if n := v.Stats.UnhandledMMIO.Load(); n != 1 {
		t.Errorf("unhandled MMIO = %d, want 1", n)
	}
}
