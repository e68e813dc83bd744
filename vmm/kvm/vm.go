package kvm

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	fd        int
	sys       *System
	xsaveSize int
}

// Close closes the VM fd. The kernel frees the VM when its vCPU fds are closed too.
func (vm *VM) Close() error { return unix.Close(vm.fd) }

// FD returns the VM's file descriptor.
func (vm *VM) FD() int { return vm.fd }

// SetUserMemoryRegion maps host memory mem at guest-physical address gpa in slot.
// mem must stay mapped until the slot is deleted (SetUserMemoryRegion with nil).
func (vm *VM) SetUserMemoryRegion(slot uint32, flags uint32, gpa uint64, mem []byte) error {
	r := userspaceMemoryRegion{
		Slot: slot, Flags: flags, GuestPhysAddr: gpa,
		MemorySize: uint64(len(mem)), UserspaceAddr: addrOf(mem),
	}
	if _, err := ioctlPtr(vm.fd, kvmSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("kvm: set memory region slot %d at %#x (%d bytes): %w", slot, gpa, len(mem), err)
	}
	return nil
}

// SetTSSAddr places the three-page TSS region Intel VMX needs (ignored by SVM).
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctl(vm.fd, kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("kvm: set tss addr: %w", err)
	}
	return nil
}

// SetIdentityMapAddr places the one-page identity map Intel VMX needs.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if _, err := ioctlPtr(vm.fd, kvmSetIdentityMapAddr, &addr); err != nil {
		return fmt.Errorf("kvm: set identity map addr: %w", err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC pair, IOAPIC and local APICs.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctl(vm.fd, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("kvm: create irqchip: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT.
func (vm *VM) CreatePIT2() error {
	var c pitConfig
	if _, err := ioctlPtr(vm.fd, kvmCreatePIT2, &c); err != nil {
		return fmt.Errorf("kvm: create pit2: %w", err)
	}
	return nil
}

// IRQLine sets the level of a GSI on the in-kernel irqchip.
func (vm *VM) IRQLine(gsi uint32, level bool) error {
	l := irqLevel{IRQ: gsi}
	if level {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, kvmIRQLine, &l); err != nil {
		return fmt.Errorf("kvm: irq line %d: %w", gsi, err)
	}
	return nil
}

// RegisterIRQFD makes a write to eventfd efd raise gsi.
func (vm *VM) RegisterIRQFD(efd int, gsi uint32) error {
	r := irqfd{FD: uint32(efd), GSI: gsi}
	if _, err := ioctlPtr(vm.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("kvm: irqfd gsi %d: %w", gsi, err)
	}
	return nil
}

// UnregisterIRQFD undoes RegisterIRQFD.
func (vm *VM) UnregisterIRQFD(efd int, gsi uint32) error {
	r := irqfd{FD: uint32(efd), GSI: gsi, Flags: irqfdDeassign}
	if _, err := ioctlPtr(vm.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("kvm: irqfd deassign gsi %d: %w", gsi, err)
	}
	return nil
}

// IOEventFD describes a guest write that signals an eventfd instead of exiting.
type IOEventFD struct {
	Addr      uint64
	Len       uint32 // 0 (any width), 1, 2, 4 or 8
	PIO       bool   // port I/O rather than MMIO
	Datamatch *uint64
}

// RegisterIOEventFD makes guest writes matching e signal eventfd efd.
func (vm *VM) RegisterIOEventFD(efd int, e IOEventFD) error {
	return vm.ioeventfd(efd, e, 0)
}

// UnregisterIOEventFD undoes RegisterIOEventFD.
func (vm *VM) UnregisterIOEventFD(efd int, e IOEventFD) error {
	return vm.ioeventfd(efd, e, ioeventfdDeassign)
}

func (vm *VM) ioeventfd(efd int, e IOEventFD, flags uint32) error {
	r := ioeventfd{Addr: e.Addr, Len: e.Len, FD: int32(efd), Flags: flags}
	if e.PIO {
		r.Flags |= ioeventfdPIO
	}
	if e.Datamatch != nil {
		r.Flags |= ioeventfdDatamatch
		r.Datamatch = *e.Datamatch
	}
	if _, err := ioctlPtr(vm.fd, kvmIOEventFD, &r); err != nil {
		return fmt.Errorf("kvm: ioeventfd %#x: %w", e.Addr, err)
	}
	return nil
}

// Clock returns the kvmclock base (KVM_GET_CLOCK).
func (vm *VM) Clock() (ClockData, error) {
	var c ClockData
	if _, err := ioctlPtr(vm.fd, kvmGetClock, &c); err != nil {
		return c, fmt.Errorf("kvm: get clock: %w", err)
	}
	return c, nil
}

// SetClock sets the kvmclock base (KVM_SET_CLOCK).
func (vm *VM) SetClock(c ClockData) error {
	if _, err := ioctlPtr(vm.fd, kvmSetClock, &c); err != nil {
		return fmt.Errorf("kvm: set clock: %w", err)
	}
	return nil
}

// IRQChip reads one in-kernel interrupt controller's state.
func (vm *VM) IRQChip(id uint32) (IRQChip, error) {
	var c IRQChip
	binary.LittleEndian.PutUint32(c[:], id)
	if _, err := ioctlPtr(vm.fd, kvmGetIRQChip, &c); err != nil {
		return c, fmt.Errorf("kvm: get irqchip %d: %w", id, err)
	}
	return c, nil
}

// SetIRQChip writes one in-kernel interrupt controller's state (id in c[0:4]).
func (vm *VM) SetIRQChip(c IRQChip) error {
	if _, err := ioctlPtr(vm.fd, kvmSetIRQChip, &c); err != nil {
		return fmt.Errorf("kvm: set irqchip: %w", err)
	}
	return nil
}

// PIT2 reads the in-kernel PIT's state.
func (vm *VM) PIT2() (PITState, error) {
	var p PITState
	if _, err := ioctlPtr(vm.fd, kvmGetPIT2, &p); err != nil {
		return p, fmt.Errorf("kvm: get pit2: %w", err)
	}
	return p, nil
}

// SetPIT2 writes the in-kernel PIT's state.
func (vm *VM) SetPIT2(p PITState) error {
	if _, err := ioctlPtr(vm.fd, kvmSetPIT2, &p); err != nil {
		return fmt.Errorf("kvm: set pit2: %w", err)
	}
	return nil
}

// DirtyLog fills bitmap (one bit per 4 KiB page of the slot, a whole number of
// uint64s) with the pages written since the last call, and resets them.
func (vm *VM) DirtyLog(slot uint32, bitmap []byte) error {
	d := dirtyLog{Slot: slot, Bitmap: addrOf(bitmap)}
	if _, err := ioctlPtr(vm.fd, kvmGetDirtyLog, &d); err != nil {
		return fmt.Errorf("kvm: dirty log slot %d: %w", slot, err)
	}
	return nil
}

// EnableCap enables a VM capability with arguments.
func (vm *VM) EnableCap(cap uint32, args ...uint64) error {
	c := enableCap{Cap: cap}
	copy(c.Args[:], args)
	if _, err := ioctlPtr(vm.fd, kvmEnableCap, &c); err != nil {
		return fmt.Errorf("kvm: enable cap %d: %w", cap, err)
	}
	return nil
}

// CreateVCPU creates vCPU id and maps its kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	r, err := ioctl(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, err)
	}
	fd := int(r)
	run, err := unix.Mmap(fd, 0, vm.sys.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kvm: mmap vcpu %d run page: %w", id, err)
	}
	return &VCPU{fd: fd, id: id, run: run, xsaveSize: vm.xsaveSize}, nil
}
