package vcpu

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/boxd-dev/boxd/internal/threadname"
	"github.com/boxd-dev/boxd/vmm/kvm"
)

// Bus is where exits are routed; devices.Bus implements it. Read and Write
// return false when no device claims the address.
type Bus interface {
	Read(addr uint64, data []byte) bool
	Write(addr uint64, data []byte) bool
}

// StopKind says why a vCPU stopped running.
type StopKind int

const (
	// StopRequested: the machine asked the vCPU to stop.
	StopRequested StopKind = iota + 1
	// StopShutdown: the guest triple-faulted (KVM_EXIT_SHUTDOWN).
	StopShutdown
	// StopSystemEvent: the guest requested poweroff/reset through KVM (PSCI-like
	// system events; Code holds the event type).
	StopSystemEvent
	// StopError: KVM failed to run the vCPU or reported an internal/entry
	// error; Err says what.
	StopError
)

func (k StopKind) String() string {
	switch k {
	case StopRequested:
		return "requested"
	case StopShutdown:
		return "triple-fault"
	case StopSystemEvent:
		return "system-event"
	case StopError:
		return "error"
	}
	return fmt.Sprintf("stop(%d)", int(k))
}

// Stop is the outcome of Run.
type Stop struct {
	Kind StopKind
	Code uint64 // system event type
	RIP  uint64 // guest RIP when it stopped (best effort)
	Err  error
}

// Stats counts exits; fields only grow and are read with atomic loads.
type Stats struct {
	Exits, IO, MMIO, Interrupted atomic.Uint64
	UnhandledIO, UnhandledMMIO   atomic.Uint64
}

type ctl int32

const (
	ctlRun ctl = iota
	ctlPause
	ctlStop
)

// VCPU runs one kvm.VCPU.
type VCPU struct {
	k    *kvm.VCPU
	pio  Bus
	mmio Bus

	Stats Stats

	mu     sync.Mutex
	cond   *sync.Cond
	want   ctl  // guarded by mu; also mirrored in wantA for the hot path
	paused bool // guarded by mu: the vCPU thread is parked in Run
	wantA  atomic.Int32
}

// New wraps k. pio and mmio receive port-I/O and MMIO exits.
func New(k *kvm.VCPU, pio, mmio Bus) *VCPU {
	v := &VCPU{k: k, pio: pio, mmio: mmio}
	v.cond = sync.NewCond(&v.mu)
	return v
}

// KVM returns the underlying vCPU (for state save/restore while paused).
func (v *VCPU) KVM() *kvm.VCPU { return v.k }

// Run runs the vCPU until it stops. It locks the calling goroutine to its OS
// thread for the duration and names the thread "vcpuN".
func (v *VCPU) Run() Stop {
	defer threadname.Lock(fmt.Sprintf("vcpu%d", v.k.ID()))()
	v.k.BindThread()
	for {
		switch ctl(v.wantA.Load()) {
		case ctlStop:
			return v.stop(StopRequested, 0, nil)
		case ctlPause:
			if v.park() {
				return v.stop(StopRequested, 0, nil)
			}
			continue
		}
		e, err := v.k.Run()
		if errors.Is(err, kvm.ErrInterrupted) {
			v.Stats.Interrupted.Add(1)
			continue
		}
		if err != nil {
			return v.stop(StopError, 0, err)
		}
		v.Stats.Exits.Add(1)
		switch e.Reason {
		case kvm.ExitIO:
			v.Stats.IO.Add(1)
			v.io(e)
		case kvm.ExitMMIO:
			v.Stats.MMIO.Add(1)
			if !access(v.mmio, e.Addr, e.Data, e.Write) {
				v.Stats.UnhandledMMIO.Add(1)
			}
		case kvm.ExitHLT, kvm.ExitIntr, kvm.ExitIRQWindowOpen:
			// With the in-kernel irqchip HLT is handled by KVM; if it reaches us,
			// re-entering waits for the next interrupt.
		case kvm.ExitShutdown:
			return v.stop(StopShutdown, 0, nil)
		case kvm.ExitSystemEvent:
			return v.stop(StopSystemEvent, e.Code, nil)
		case kvm.ExitFailEntry, kvm.ExitInternalError:
			return v.stop(StopError, e.Code, fmt.Errorf("vcpu %d: %v", v.k.ID(), e))
		default:
			return v.stop(StopError, 0, fmt.Errorf("vcpu %d: unexpected exit %v", v.k.ID(), e))
		}
	}
}

func (v *VCPU) io(e kvm.Exit) {
	if e.Data == nil || e.Size == 0 {
		v.Stats.UnhandledIO.Add(1)
		return
	}
	// REP INS/OUTS arrive as Count accesses of Size bytes each.
	for i := 0; i < e.Count; i++ {
		d := e.Data[i*e.Size : (i+1)*e.Size]
		if !access(v.pio, uint64(e.Port), d, e.Write) {
			v.Stats.UnhandledIO.Add(1)
		}
	}
}

func access(b Bus, addr uint64, data []byte, write bool) bool {
	if write {
		return b.Write(addr, data)
	}
	if !b.Read(addr, data) {
		for i := range data {
			data[i] = 0xff
		}
		return false
	}
	return true
}

func (v *VCPU) stop(k StopKind, code uint64, err error) Stop {
	s := Stop{Kind: k, Code: code, Err: err}
	if r, rerr := v.k.Regs(); rerr == nil {
		s.RIP = r.RIP
	}
	return s
}

// park blocks the vCPU thread while a pause is requested. It reports whether a
// stop was requested meanwhile.
func (v *VCPU) park() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.paused = true
	v.cond.Broadcast()
	for v.want == ctlPause {
		v.cond.Wait()
	}
	v.paused = false
	v.cond.Broadcast()
	return v.want == ctlStop
}

func (v *VCPU) request(c ctl) error {
	v.mu.Lock()
	v.want = c
	v.wantA.Store(int32(c))
	v.cond.Broadcast()
	v.mu.Unlock()
	return v.k.Kick()
}

// Pause asks the vCPU to leave the guest and park; WaitPaused waits for it.
func (v *VCPU) Pause() error { return v.request(ctlPause) }

// WaitPaused blocks until the vCPU thread is parked (or Run has returned, which
// the caller must rule out by only calling this while Run is active).
func (v *VCPU) WaitPaused() {
	v.mu.Lock()
	for !v.paused && v.want == ctlPause {
		v.cond.Wait()
	}
	v.mu.Unlock()
}

// Resume lets a paused vCPU re-enter the guest.
func (v *VCPU) Resume() error {
	v.mu.Lock()
	v.want = ctlRun
	v.wantA.Store(int32(ctlRun))
	v.cond.Broadcast()
	v.mu.Unlock()
	return nil
}

// RequestStop makes Run return StopRequested soon.
func (v *VCPU) RequestStop() error { return v.request(ctlStop) }
