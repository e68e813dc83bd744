package initsteps

import (
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
	"github.com/boxd-dev/boxd/guest-init/switchroot"
)

// System is every privileged operation the boot steps perform. Linux is the
// real one; tests record calls with a fake.
type System interface {
	switchroot.Sys // mounts, chdir, chroot, exec
	// WriteMMIO stores a 32-bit value at a guest-physical address, as one
	// 4-byte access (the boot timer and the power register need it).
	WriteMMIO(addr uint64, v uint32) error
	// AddEntropy mixes seed into the kernel's pool and credits it.
	AddEntropy(seed []byte) error
	SetClock(t time.Time) error
	// LinkUp brings a network interface up; HasLink reports whether it exists.
	LinkUp(name string) error
	HasLink(name string) bool
	// SetNetwork applies an interface address, default route, resolv.conf
	// (under the env's root) and hostname.
	SetNetwork(cfg wire.NetworkConfig) error
}

// Halter is what shutdown needs beyond the mounts.
type Halter interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string, flags int) error
	WriteMMIO(addr uint64, v uint32) error
	Sync()
	Kill(pid int, sig int) error
	// Reboot is reboot(2) with a LINUX_REBOOT_CMD_* command.
	Reboot(cmd int) error
}
