package network

import (
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// namespace is the network namespace the Manager works in. A zero fd means
// the process's own: then every call runs where it is. Otherwise sockets,
// TAP creation and sysctls run on a thread switched into the namespace,
// because those act on the calling thread's namespace (netlink and nftables
// requests carry the namespace in their own socket instead).
type namespace struct {
	fd int
}

func (n namespace) current() bool { return n.fd == 0 }

// do runs fn in the namespace. Objects fn creates (sockets, TAP devices)
// stay in that namespace after it returns.
func (n namespace) do(fn func() error) error {
	if n.current() {
		return fn()
	}
	errc := make(chan error, 1)
	// A fresh goroutine, so that a thread that cannot be switched back is
	// never unlocked: it dies with the goroutine instead of carrying the
	// wrong namespace into the rest of the program.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("network: enter namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("network: leave namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// sysctl writes a value under /proc/sys. Entries under /proc/sys/net are
// looked up in the calling thread's namespace, hence do.
func (n namespace) sysctl(path, value string) error {
	return n.do(func() error {
		if err := os.WriteFile("/proc/sys/"+path, []byte(value+"\n"), 0); err != nil {
			return fmt.Errorf("network: sysctl %s=%s: %w", path, value, err)
		}
		return nil
	})
}
