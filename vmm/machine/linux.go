package machine

import (
	"fmt"
	"os"

	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
)

// DefaultCmdline is what boxd gives every Linux guest before its own
// arguments: a serial console, quiet (every console byte is a VM exit: a
// verbose boot spends most of its time printing), reboot through the i8042
// (which the monitor turns into an exit), reboot at once on panic (the
// monitor reports it as a crash), and no probing of hardware a boxd VM does
// not have.
const DefaultCmdline = "console=ttyS0 quiet reboot=k panic=-1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd"

// LinuxLoader loads a Linux kernel (ELF vmlinux through its PVH entry, or a
// bzImage through the 64-bit boot protocol), an optional initrd and a command
// line, and sets up vCPU 0 to enter it. cpus is the machine's vCPU count (for
// the MP table).
func LinuxLoader(kernelPath, initrdPath, cmdline string, cpus int) Loader {
	return func(mem *memory.RAM, bsp *kvm.VCPU, extra string) error {
		cmdline := cmdline
		if extra != "" {
			cmdline += " " + extra
		}
		k, err := os.Open(kernelPath)
		if err != nil {
			return fmt.Errorf("machine: kernel: %w", err)
		}
		defer k.Close()
		ks, err := k.Stat()
		if err != nil {
			return fmt.Errorf("machine: kernel: %w", err)
		}
		cfg := boot.Config{Kernel: k, KernelSize: ks.Size(), Cmdline: cmdline, CPUs: cpus}
		if initrdPath != "" {
			f, err := os.Open(initrdPath)
			if err != nil {
				return fmt.Errorf("machine: initrd: %w", err)
			}
			defer f.Close()
			fs, err := f.Stat()
			if err != nil {
				return fmt.Errorf("machine: initrd: %w", err)
			}
			cfg.Initrd, cfg.InitrdSize = f, fs.Size()
		}
		e, err := boot.Load(mem, cfg)
		if err != nil {
			return fmt.Errorf("machine: load %s: %w", kernelPath, err)
		}
		return SetEntry(bsp, e)
	}
}

// SetEntry puts a vCPU in the start state a loader computed.
func SetEntry(c *kvm.VCPU, e *boot.Entry) error {
	s, err := c.Sregs()
	if err != nil {
		return err
	}
	seg := func(b boot.Segment) kvm.Segment {
		return kvm.Segment{
			Base: b.Base, Limit: b.Limit, Selector: b.Selector, Type: b.Type,
			Present: b.Present, DPL: b.DPL, DB: b.DB, S: b.S, L: b.L, G: b.G,
			AVL: b.AVL, Unusable: b.Unusable,
		}
	}
	es := e.SRegs
	s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = seg(es.CS), seg(es.DS), seg(es.ES), seg(es.FS), seg(es.GS), seg(es.SS)
	s.TR, s.LDT = seg(es.TR), seg(es.LDT)
	s.GDT = kvm.DTable{Base: es.GDT.Base, Limit: es.GDT.Limit}
	s.IDT = kvm.DTable{Base: es.IDT.Base, Limit: es.IDT.Limit}
	s.CR0, s.CR3, s.CR4, s.EFER = es.CR0, es.CR3, es.CR4, es.EFER
	if err := c.SetSregs(s); err != nil {
		return err
	}
	r := e.Regs
	return c.SetRegs(kvm.Regs{
		RAX: r.RAX, RBX: r.RBX, RCX: r.RCX, RDX: r.RDX, RSI: r.RSI, RDI: r.RDI,
		RSP: r.RSP, RBP: r.RBP, RIP: r.RIP, RFLAGS: r.RFLAGS,
	})
}
