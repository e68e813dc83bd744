package machine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/kvm"
)

// virtioSlot is one virtio-mmio device: its window on the MMIO bus, its GSI,
// and the ioeventfds that turn queue kicks into Notify calls (or, for a
// mmio.KickFDUser, wake its worker directly) without a vCPU exit to the
// monitor.
type virtioSlot struct {
	base      uint64
	gsi       uint32
	transport *mmio.Transport
	kicks     []int      // one ioeventfd per queue
	files     []*os.File // kicks[q] wrapped for the goroutine that reads it; nil for a KickFDUser
	done      chan struct{}
}

// addVirtio maps dev as the next virtio-mmio device.
func (m *Machine) addVirtio(dev mmio.Device) error {
	i := len(m.virtio)
	if i >= boot.VirtioMMIOMax {
		return fmt.Errorf("machine: more than %d virtio devices", boot.VirtioMMIOMax)
	}
	s := &virtioSlot{
		base: boot.VirtioMMIOBase + uint64(i)*boot.VirtioMMIOStride,
		gsi:  boot.VirtioIRQBase + uint32(i),
		done: make(chan struct{}),
	}
	irq, err := m.IRQ(s.gsi)
	if err != nil {
		return err
	}
	if s.transport, err = mmio.New(dev, m.ram, irq); err != nil {
		return err
	}
	if err := m.MMIO.Insert(s.base, mmio.Size, s.transport); err != nil {
		return err
	}
	m.virtio = append(m.virtio, s)
	for q := range dev.QueueSizes() {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return fmt.Errorf("machine: eventfd: %w", err)
		}
		match := uint64(q)
		if err := m.vm.RegisterIOEventFD(fd, kvm.IOEventFD{Addr: s.base + mmio.NotifyOffset, Len: 4, Datamatch: &match}); err != nil {
			unix.Close(fd)
			return err
		}
		s.kicks = append(s.kicks, fd)
	}
	if u, ok := dev.(mmio.KickFDUser); ok {
		// The device's worker waits on (duplicates of) the ioeventfds.
		if err := u.UseKickFDs(s.kicks); err != nil {
			return fmt.Errorf("machine: virtio device %d: %w", i, err)
		}
		return nil
	}
	for q, fd := range s.kicks {
		// A non-blocking eventfd in an *os.File is served by Go's poller:
		// the reading goroutine parks without holding an OS thread. The
		// file owns fd from here on.
		f := os.NewFile(uintptr(fd), fmt.Sprintf("virtio%d-kick%d", i, q))
		s.files = append(s.files, f)
		m.wgIO.Add(1)
		go func() {
			defer m.wgIO.Done()
			var b [8]byte
			for {
				if _, err := f.Read(b[:]); err != nil {
					return
				}
				s.transport.Notify(q)
			}
		}()
	}
	return nil
}

// virtioName is a virtio device's name in a snapshot: its kind and MMIO
// base, e.g. "virtio-blk@0xd0000000".
func virtioName(s *virtioSlot) string {
	kind := map[uint32]string{
		virtio.DeviceNet: "net", virtio.DeviceBlock: "blk", virtio.DeviceConsole: "console",
		virtio.DeviceEntropy: "rng", virtio.DeviceVsock: "vsock",
	}[s.transport.Device().Type()]
	if kind == "" {
		kind = fmt.Sprintf("type%d", s.transport.Device().Type())
	}
	return fmt.Sprintf("virtio-%s@%#x", kind, s.base)
}

// virtioCmdline declares every virtio-mmio device to the guest kernel.
func (m *Machine) virtioCmdline() string {
	var args []string
	for _, s := range m.virtio {
		args = append(args, mmio.CmdlineArg(s.base, mmio.Size, s.gsi))
	}
	return strings.Join(args, " ")
}

// closeVirtio stops kick delivery, resets the devices and closes those that
// hold resources.
func (m *Machine) closeVirtio() error {
	var errs []error
	for _, s := range m.virtio {
		for q, fd := range s.kicks {
			match := uint64(q)
			errs = append(errs, m.vm.UnregisterIOEventFD(fd, kvm.IOEventFD{Addr: s.base + mmio.NotifyOffset, Len: 4, Datamatch: &match}))
			if q < len(s.files) {
				errs = append(errs, s.files[q].Close())
			} else {
				errs = append(errs, unix.Close(fd))
			}
		}
	}
	m.wgIO.Wait()
	for _, s := range m.virtio {
		dev := s.transport.Device()
		dev.Reset()
		if c, ok := dev.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
