package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/agent/wire"
)

// TestLinuxSetNetwork applies a configuration inside fresh network and UTS
// namespaces, entered by one locked thread that is then discarded. (A veth
// stands in for eth0: the dummy link type is not available everywhere.)
func TestLinuxSetNetwork(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for namespaces")
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	type result struct {
		addrs    []string
		gw       string
		mac      string
		hostname string
		err      error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespaces
		var r result
		defer func() { done <- r }()
		if r.err = unix.Unshare(unix.CLONE_NEWNET | unix.CLONE_NEWUTS); r.err != nil {
			return
		}
		if r.err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); r.err != nil {
			return
		}
		l := &Linux{ResolvConf: resolv}
		cfg := wire.NetworkConfig{MAC: "02:00:00:aa:bb:cc", Address: "10.9.0.2/24", Gateway: "10.9.0.1",
			DNS: []string{"10.9.0.1", "fd00::1"}, Hostname: "task-1"}
		if r.err = l.SetNetwork(cfg); r.err != nil {
			return
		}
		cfg.Address = "10.9.1.3/16" // again: the old address is replaced
		cfg.Gateway = "10.9.0.254"
		if r.err = l.SetNetwork(cfg); r.err != nil {
			return
		}
		link, err := netlink.LinkByName("eth0")
		if r.err = err; err != nil {
			return
		}
		r.mac = link.Attrs().HardwareAddr.String()
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		for _, a := range addrs {
			r.addrs = append(r.addrs, a.IPNet.String())
		}
		routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
		for _, rt := range routes {
			if rt.Gw != nil {
				r.gw = rt.Gw.String()
			}
		}
		var uts unix.Utsname
		unix.Uname(&uts)
		r.hostname = unix.ByteSliceToString(uts.Nodename[:])
	}()
	r := <-done
	if r.err != nil {
		if os.IsPermission(r.err) {
			t.Skipf("no namespaces here: %v", r.err)
		}
		t.Fatal(r.err)
	}
	if len(r.addrs) != 1 || r.addrs[0] != "10.9.1.3/16" || r.gw != "10.9.0.254" || r.mac != "02:00:00:aa:bb:cc" || r.hostname != "task-1" {
		t.Errorf("got %+v", r)
	}
	b, err := os.ReadFile(resolv)
	if err != nil || !strings.Contains(string(b), "nameserver 10.9.0.1\nnameserver fd00::1\n") {
		t.Errorf("resolv.conf %q %v", b, err)
	}
	if h, _ := os.Hostname(); h == "task-1" {
		t.Error("the host's own hostname changed")
	}
}

// TestLinuxReseed credits entropy for real; writing to the pool is harmless.
func TestLinuxReseed(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("RNDADDENTROPY needs CAP_SYS_ADMIN")
	}
	if err := (&Linux{}).Reseed([]byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
}
