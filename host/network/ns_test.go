package network

import (
	"os"
	"runtime"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireNetAdmin skips a test that needs to create namespaces and links.
func requireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	// Probed in the process's own namespace: through WithNetNSFd, a
	// failed socket (nfnetlink not loaded) panics inside
	// github.com/mdlayher/socket v0.5.1, which drops the error.
	c, err := nftables.New()
	if err == nil {
		_, err = c.ListTables()
	}
	if err != nil {
		t.Skipf("no nf_tables here (modprobe nf_tables): %v", err)
	}
}

// newNS creates a network namespace, with its loopback up, that lives as
// long as the test. Nothing in it has a route out of it.
func newNS(t testing.TB) int {
	t.Helper()
	type result struct {
		h   netns.NsHandle
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			rc <- result{err: err}
			return
		}
		defer orig.Close()
		h, err := netns.New() // unshare(CLONE_NEWNET) on this thread
		if err != nil {
			rc <- result{err: err}
			return
		}
		if err := netns.Set(orig); err != nil {
			rc <- result{err: err} // the thread dies with this goroutine
			return
		}
		runtime.UnlockOSThread()
		rc <- result{h: h}
	}()
	r := <-rc
	if r.err != nil {
		t.Skipf("cannot create a network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.h.Close() })
	nl := nlAt(t, int(r.h))
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return int(r.h)
}

// nlAt returns a netlink handle working in namespace fd.
func nlAt(t testing.TB, fd int) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// inNS runs fn on a thread inside namespace fd.
func inNS(t *testing.T, fd int, fn func() error) {
	t.Helper()
	if err := (namespace{fd: fd}).do(fn); err != nil {
		t.Fatal(err)
	}
}

func readSysctl(t *testing.T, fd int, path string) string {
	t.Helper()
	var s string
	inNS(t, fd, func() error {
		b, err := os.ReadFile("/proc/sys/" + path)
		s = string(b)
		return err
	})
	return s
}
