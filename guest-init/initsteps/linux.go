package initsteps

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/agent/wire"
	"github.com/boxd-dev/boxd/guest-init/agent"
)

// Linux is the real System and Halter. Entropy, clock and network changes go
// through the agent's own implementation, so boot and a later host request
// (after a fork or restore) apply them the same way.
type Linux struct {
	// DevMem is the physical-memory device (default /dev/mem).
	DevMem string
	// Root is where /etc/resolv.conf is written under (default "/").
	Root string
}

var (
	_ System = (*Linux)(nil)
	_ Halter = (*Linux)(nil)
)

func (l *Linux) lifecycle() *agent.Linux {
	root := l.Root
	if root == "" {
		root = "/"
	}
	return &agent.Linux{ResolvConf: filepath.Join(root, "etc/resolv.conf")}
}

// Mount mounts with u-root's wrapper, whose errors name the device and type.
func (l *Linux) Mount(source, target, fstype string, flags uintptr, data string) error {
	_, err := mount.Mount(source, target, fstype, data, flags)
	return err
}

func (l *Linux) Unmount(target string, flags int) error { return unix.Unmount(target, flags) }

func (l *Linux) MoveMount(source, target string) error { return mount.MoveMount(source, target) }

// IsMountPoint compares the device of p with that of its parent.
func (l *Linux) IsMountPoint(p string) (bool, error) {
	same, err := mount.SameFilesystem(p, filepath.Join(p, ".."))
	return !same, err
}

func (l *Linux) Chdir(dir string) error  { return unix.Chdir(dir) }
func (l *Linux) Chroot(dir string) error { return unix.Chroot(dir) }

func (l *Linux) Exec(path string, argv, env []string) error { return unix.Exec(path, argv, env) }

func (l *Linux) WriteMMIO(addr uint64, v uint32) error {
	dev := l.DevMem
	if dev == "" {
		dev = "/dev/mem"
	}
	return storeMMIO(dev, addr, v)
}

func (l *Linux) AddEntropy(seed []byte) error { return l.lifecycle().Reseed(seed) }

func (l *Linux) SetClock(t time.Time) error { return l.lifecycle().SetClock(t) }

func (l *Linux) LinkUp(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	return netlink.LinkSetUp(link)
}

func (l *Linux) HasLink(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

func (l *Linux) SetNetwork(cfg wire.NetworkConfig) error { return l.lifecycle().SetNetwork(cfg) }

func (l *Linux) Sync() { unix.Sync() }

func (l *Linux) Kill(pid int, sig int) error { return unix.Kill(pid, unix.Signal(sig)) }

func (l *Linux) Reboot(cmd int) error { return unix.Reboot(cmd) }
