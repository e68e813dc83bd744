package machine

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

// irqLine is a GSI of the in-kernel irqchip driven through an irqfd: Trigger
// writes the eventfd and KVM injects an edge, with no exit to the monitor.
type irqLine struct {
	vm  *kvm.VM
	gsi uint32
	fd  int
}

func newIRQLine(vm *kvm.VM, gsi uint32) (*irqLine, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("machine: eventfd for gsi %d: %w", gsi, err)
	}
	if err := vm.RegisterIRQFD(fd, gsi); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &irqLine{vm: vm, gsi: gsi, fd: fd}, nil
}

// Trigger raises the line once.
func (l *irqLine) Trigger() error {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_, err := unix.Write(l.fd, one[:])
	if err == unix.EAGAIN {
		// The counter is saturated: an interrupt is already pending.
		return nil
	}
	return err
}

func (l *irqLine) close() error {
	err := l.vm.UnregisterIRQFD(l.fd, l.gsi)
	if cerr := unix.Close(l.fd); err == nil {
		err = cerr
	}
	return err
}
