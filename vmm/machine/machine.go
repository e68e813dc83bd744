package machine

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/devices"
	"github.com/boxd-dev/boxd/devices/boottimer"
	"github.com/boxd-dev/boxd/devices/i8042"
	"github.com/boxd-dev/boxd/devices/power"
	"github.com/boxd-dev/boxd/devices/rtc"
	"github.com/boxd-dev/boxd/devices/serial"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/cpuid"
	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/vcpu"
)

// Loader writes what the guest runs into RAM and sets vCPU 0's start state.
// cmdline is what the machine adds to the kernel command line (its virtio-mmio
// devices); LinuxLoader appends it, tests with tiny programs ignore it.
type Loader func(mem *memory.RAM, bsp *kvm.VCPU, cmdline string) error

// Config describes a machine.
type Config struct {
	CPUs   int
	MemMiB int
	// MemDir backs RAM with a file in this folder (a tmpfs) instead of a memfd.
	MemDir string
	// LayerDir is a folder on the filesystem where snapshots on disk live
	// (suspend to disk, goldens), owned by the VM and kept while it lives:
	// a memory layer restored from such a snapshot, which cannot be linked
	// into MemDir, is linked here, so the VM can still be forked (SaveFork
	// names the layer by this link) after the snapshot is deleted. The
	// machine removes its links when it is closed.
	LayerDir string

	// Load puts the guest in memory and sets vCPU 0's registers; see LinuxLoader.
	Load Loader

	// Virtio devices, mapped in this order from VirtioMMIOBase on GSIs from
	// VirtioIRQBase. The machine owns them, even when New fails: it resets
	// them on Close and closes those that implement io.Closer.
	Virtio []mmio.Device

	// Console receives the guest's serial output; nil discards it.
	Console io.Writer
	// Log receives the monitor's own messages (boot-timer marks); nil discards.
	Log io.Writer
	// ram, when set, is the guest RAM to use instead of fresh memory (Restore
	// maps a memory file). The machine owns it from New on.
	ram *memory.RAM
}

// State is where a machine is in its lifecycle.
type State int

// Lifecycle states.
const (
	Created State = iota
	Running
	Paused
	Stopped
)

func (s State) String() string {
	return [...]string{"created", "running", "paused", "stopped"}[s]
}

// ExitKind says how a machine ended.
type ExitKind int

// Exit kinds, from the guest's point of view.
const (
	// Poweroff: the guest powered off (power register).
	Poweroff ExitKind = iota + 1
	// Reboot: the guest asked to reboot (power register or i8042 reset).
	Reboot
	// Crash: the guest crashed (triple fault, KVM could not run it, or its
	// kernel panicked).
	Crash
	// Stopped by the host (Stop).
	HostStop
)

func (k ExitKind) String() string {
	switch k {
	case Poweroff:
		return "poweroff"
	case Reboot:
		return "reboot"
	case Crash:
		return "crash"
	case HostStop:
		return "host-stop"
	}
	return fmt.Sprintf("exit(%d)", int(k))
}

// Result is how and why a machine stopped.
type Result struct {
	Kind   ExitKind
	Detail string
}

// Machine is one VM.
type Machine struct {
	cfg    Config
	sys    *kvm.System
	vm     *kvm.VM
	ram    *memory.RAM
	kvcpus []*kvm.VCPU
	vcpus  []*vcpu.VCPU
	irqs   []*irqLine
	virtio []*virtioSlot
	wgIO   sync.WaitGroup // kick-delivery goroutines

	PIO, MMIO devices.Bus
	Serial    *serial.Serial
	BootTimer *boottimer.Timer
	kbd       *i8042.Controller
	cmos      *rtc.CMOS

	devMu     sync.Mutex // serializes pauseDevices and resumeDevices
	devPaused bool       // guarded by devMu: every device is quiesced

	wg      sync.WaitGroup
	mu      sync.Mutex
	state   State   // guarded by mu
	result  *Result // guarded by mu: the first stop reason
	done    chan struct{}
	started time.Time
}

// ErrState is returned for a lifecycle operation in the wrong state.
var ErrState = errors.New("machine: invalid state for operation")

// New builds a machine: KVM VM, RAM, irqchip, PIT, vCPUs, platform devices, and
// the guest loaded by cfg.Load. Nothing runs until Start.
func New(cfg Config) (m *Machine, err error) {
	if cfg.CPUs < 1 || cfg.CPUs > boot.MaxCPUs {
		return nil, fmt.Errorf("machine: %d vCPUs: want 1..%d", cfg.CPUs, boot.MaxCPUs)
	}
	if cfg.MemMiB < 16 {
		return nil, fmt.Errorf("machine: %d MiB of memory: want at least 16", cfg.MemMiB)
	}
	if cfg.Load == nil {
		return nil, errors.New("machine: no loader")
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	m = &Machine{cfg: cfg, done: make(chan struct{}), ram: cfg.ram}
	// Error returns below set the named result m to nil; clean up through a copy.
	self := m
	defer func() {
		if err != nil {
			self.Close()
			// The machine owns cfg.Virtio: close those it never mapped.
			for _, d := range cfg.Virtio[len(self.virtio):] {
				if c, ok := d.(io.Closer); ok {
					c.Close()
				}
			}
		}
	}()
	if m.sys, err = kvm.Open(); err != nil {
		return nil, err
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return nil, err
	}
	// Memory slots go in before the irqchip and PIT exist: once they do, every
	// slot change waits for an SRCU grace period (measured: 7 ms against 50 µs).
	if m.ram == nil {
		if m.ram, err = memory.New(uint64(cfg.MemMiB)<<20, cfg.memOptions()); err != nil {
			return nil, err
		}
	}
	for i, r := range m.ram.Regions() {
		if err = m.vm.SetUserMemoryRegion(uint32(i), 0, r.GPA, m.ram.Host(r)); err != nil {
			return nil, err
		}
	}
	if err = m.vm.SetTSSAddr(boot.KVMTSSAddr); err != nil {
		return nil, err
	}
	if err = m.vm.SetIdentityMapAddr(boot.KVMIdentityMapAddr); err != nil {
		return nil, err
	}
	if err = m.vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err = m.vm.CreatePIT2(); err != nil {
		return nil, err
	}
	if err = m.addPlatformDevices(); err != nil {
		return nil, err
	}
	for _, d := range cfg.Virtio {
		if err = m.addVirtio(d); err != nil {
			return nil, err
		}
	}
	if err = m.createVCPUs(); err != nil {
		return nil, err
	}
	if err = cfg.Load(m.ram, m.kvcpus[0], m.virtioCmdline()); err != nil {
		return nil, err
	}
	return m, nil
}

// RAM is the guest's memory.
func (m *Machine) RAM() *memory.RAM { return m.ram }

// VM is the KVM VM (for device wiring: irqfds, ioeventfds).
func (m *Machine) VM() *kvm.VM { return m.vm }

// IRQ returns an interrupt line on gsi driven through an irqfd.
func (m *Machine) IRQ(gsi uint32) (*irqLine, error) {
	l, err := newIRQLine(m.vm, gsi)
	if err != nil {
		return nil, err
	}
	m.irqs = append(m.irqs, l)
	return l, nil
}

func (m *Machine) addPlatformDevices() error {
	com1, err := m.IRQ(boot.COM1IRQ)
	if err != nil {
		return err
	}
	m.Serial = serial.New(serial.Config{Out: newPanicWatch(m.cfg.Console, m.guestPanicked), IRQ: com1})
	if err := m.PIO.Insert(boot.COM1Port, serial.Size, m.Serial); err != nil {
		return err
	}
	pwr := power.New(func(a uint32) {
		if a == power.Poweroff {
			m.finish(Result{Kind: Poweroff, Detail: "guest powered off"})
		} else {
			m.finish(Result{Kind: Reboot, Detail: "guest rebooted"})
		}
	})
	if err := m.MMIO.Insert(boot.PowerAddr, boot.PowerSize, pwr); err != nil {
		return err
	}
	return m.addLegacyDevices()
}

func (m *Machine) guestPanicked(line string) {
	m.finish(Result{Kind: Crash, Detail: "guest kernel panic: " + line})
}

// Boot MSR values (the state firmware would leave).
var bootMSRs = []kvm.MSR{
	{Index: 0x174}, {Index: 0x175}, {Index: 0x176}, // SYSENTER_CS/ESP/EIP
	{Index: 0xc0000081}, {Index: 0xc0000082}, {Index: 0xc0000083}, // STAR, LSTAR, CSTAR
	{Index: 0xc0000084}, {Index: 0xc0000102}, // SYSCALL_MASK, KERNEL_GS_BASE
	{Index: 0x10},                      // TSC
	{Index: 0x1a0, Data: 1},            // MISC_ENABLE: fast strings
	{Index: 0x2ff, Data: 1<<11 | 0x06}, // MTRRdefType: MTRRs on, write-back
}

// LAPIC register offsets and delivery modes for LINT0/LINT1.
const (
	apicLVT0       = 0x350
	apicLVT1       = 0x360
	apicModeNMI    = 4
	apicModeExtINT = 7
)

func (m *Machine) createVCPUs() error {
	sup, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	opt := cpuid.Options{TSCDeadline: m.sys.CheckExtension(kvm.CapTSCDeadlineTimer) > 0}
	for id := range m.cfg.CPUs {
		c, err := m.vm.CreateVCPU(id)
		if err != nil {
			return err
		}
		m.kvcpus = append(m.kvcpus, c)
		if err := c.SetCPUID2(cpuid.ForGuest(sup, id, m.cfg.CPUs, opt)); err != nil {
			return err
		}
		if err := c.SetMSRs(bootMSRs); err != nil {
			return err
		}
		if err := setLINT(c); err != nil {
			return err
		}
		fpu := kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
		if err := c.SetFPU(fpu); err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, vcpu.New(c, &m.PIO, &m.MMIO))
	}
	return nil
}

// setLINT routes the local APIC's LINT0 to the PIC (ExtINT) and LINT1 to NMI,
// as a PC's firmware does; Linux expects it with an MP table.
func setLINT(c *kvm.VCPU) error {
	l, err := c.LAPIC()
	if err != nil {
		return err
	}
	set := func(off int, mode uint32) {
		v := uint32(l[off]) | uint32(l[off+1])<<8 | uint32(l[off+2])<<16 | uint32(l[off+3])<<24
		v = v&^0x700 | mode<<8
		l[off], l[off+1], l[off+2], l[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	set(apicLVT0, apicModeExtINT)
	set(apicLVT1, apicModeNMI)
	return c.SetLAPIC(l)
}

// Start runs every vCPU on its own goroutine.
func (m *Machine) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state != Created {
		return fmt.Errorf("%w: start in state %v", ErrState, m.state)
	}
	m.state = Running
	m.started = time.Now()
	m.BootTimer.SetStart(m.started)
	// A restored machine's devices wait, quiesced, for its first run.
	m.resumeDevices()
	for _, v := range m.vcpus {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			s := v.Run()
			switch s.Kind {
			case vcpu.StopRequested:
			case vcpu.StopShutdown:
				m.finish(Result{Kind: Crash, Detail: fmt.Sprintf("vcpu %d triple fault at rip %#x", v.KVM().ID(), s.RIP)})
			case vcpu.StopSystemEvent:
				if s.Code == kvm.SystemEventReset {
					m.finish(Result{Kind: Reboot, Detail: "guest reset"})
				} else if s.Code == kvm.SystemEventShutdown {
					m.finish(Result{Kind: Poweroff, Detail: "guest shutdown event"})
				} else {
					m.finish(Result{Kind: Crash, Detail: fmt.Sprintf("guest system event %d", s.Code)})
				}
			default:
				m.finish(Result{Kind: Crash, Detail: fmt.Sprintf("vcpu %d: %v (rip %#x)", v.KVM().ID(), s.Err, s.RIP)})
			}
		}()
	}
	return nil
}

// finish records the first stop reason and kicks every vCPU out of the guest.
func (m *Machine) finish(r Result) {
	m.mu.Lock()
	if m.result != nil {
		m.mu.Unlock()
		return
	}
	m.result = &r
	m.mu.Unlock()
	for _, v := range m.vcpus {
		v.RequestStop()
	}
	go func() {
		m.wg.Wait()
		m.mu.Lock()
		m.state = Stopped
		m.mu.Unlock()
		close(m.done)
	}()
}

// Stop asks the machine to stop (HostStop unless the guest already stopped it).
func (m *Machine) Stop() { m.finish(Result{Kind: HostStop, Detail: "stopped by the host"}) }

// Wait blocks until the machine has stopped and every vCPU goroutine has returned.
func (m *Machine) Wait() Result {
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return *m.result
}

// Done is closed when the machine has stopped.
func (m *Machine) Done() <-chan struct{} { return m.done }

// State reports the lifecycle state.
func (m *Machine) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Pause takes every vCPU out of the guest and parks it, then quiesces every
// device: in-flight virtio requests complete (or go back to their ring),
// queue notifications and host input (TAP frames, vsock host connections,
// serial input) wait for Resume, and no device touches guest memory or
// raises an interrupt. When it returns, vCPU, device and memory state are
// stable: the caller may read or write them, or take a snapshot.
func (m *Machine) Pause() error {
	m.mu.Lock()
	if m.state != Running || m.result != nil {
		st := m.state
		m.mu.Unlock()
		return fmt.Errorf("%w: pause in state %v", ErrState, st)
	}
	m.state = Paused
	m.mu.Unlock()
	for _, v := range m.vcpus {
		if err := v.Pause(); err != nil {
			return err
		}
	}
	for _, v := range m.vcpus {
		v.WaitPaused()
	}
	// vCPUs first: once they are parked no register access or kick can
	// start new device work.
	m.pauseDevices()
	return nil
}

// Resume restarts the devices, each looking at all its queues for what
// arrived while paused, and lets the paused vCPUs re-enter the guest.
func (m *Machine) Resume() error {
	m.mu.Lock()
	if m.state != Paused {
		st := m.state
		m.mu.Unlock()
		return fmt.Errorf("%w: resume in state %v", ErrState, st)
	}
	m.state = Running
	m.mu.Unlock()
	m.resumeDevices()
	for _, v := range m.vcpus {
		v.Resume()
	}
	return nil
}

// Close releases every resource. The machine must not be running.
func (m *Machine) Close() error {
	var errs []error
	if m.vm != nil {
		errs = append(errs, m.closeVirtio())
	}
	for _, l := range m.irqs {
		errs = append(errs, l.close())
	}
	for _, c := range m.kvcpus {
		errs = append(errs, c.Close())
	}
	if m.vm != nil {
		errs = append(errs, m.vm.Close())
	}
	if m.ram != nil {
		errs = append(errs, m.ram.Close())
	}
	if m.sys != nil {
		errs = append(errs, m.sys.Close())
	}
	return errors.Join(errs...)
}
