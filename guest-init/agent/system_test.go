package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/agent/wire"
)

// TestLinuxSetNetwork applies a configuration inside fresh network and UTS
// namespaces. It runs in a child process (this test binary again): the
// goroutine that unshares may land on the main thread, which Go never
// discards, and /proc/self/net follows the main thread. (A veth stands in for
// eth0: the dummy link type is not available everywhere.)
func TestLinuxSetNetwork(t *testing.T) {
	if os.Getenv("BOXD_AGENT_NETNS_CHILD") == "1" {
		setNetworkChild(t)
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for namespaces")
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLinuxSetNetwork$", "-test.v")
	cmd.Env = append(os.Environ(), "BOXD_AGENT_NETNS_CHILD=1", "BOXD_AGENT_RESOLV="+resolv)
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "SKIP") {
		t.Skipf("child skipped: %s", out)
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, js, _ := strings.Cut(string(out), "RESULT ")
	js, _, _ = strings.Cut(js, "\n")
	var r netResult
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	want := netResult{Addrs: []string{"10.9.1.3/16"}, Gateway: "10.9.0.254", MAC: "02:00:00:aa:bb:cc", Hostname: "task-1"}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(resolv)
	if err != nil || !strings.Contains(string(b), "nameserver 10.9.0.1\nnameserver fd00::1\n") {
		t.Errorf("resolv.conf %q %v", b, err)
	}
	if h, _ := os.Hostname(); h == "task-1" {
		t.Error("the host's own hostname changed")
	}
}

type netResult struct {
	Addrs    []string
	Gateway  string
	MAC      string
	Hostname string
}

func setNetworkChild(t *testing.T) {
	runtime.LockOSThread() // and never unlock: this process exists for it
	if err := unix.Unshare(unix.CLONE_NEWNET | unix.CLONE_NEWUTS); err != nil {
		t.Skipf("no namespaces here: %v", err)
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	l := &Linux{ResolvConf: os.Getenv("BOXD_AGENT_RESOLV")}
	cfg := wire.NetworkConfig{MAC: "02:00:00:aa:bb:cc", Address: "10.9.0.2/24", Gateway: "10.9.0.1",
		DNS: []string{"10.9.0.1", "fd00::1"}, Hostname: "task-1"}
	if err := l.SetNetwork(cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Address = "10.9.1.3/16" // again: the old address is replaced
	cfg.Gateway = "10.9.0.254"
	if err := l.SetNetwork(cfg); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	r := netResult{MAC: link.Attrs().HardwareAddr.String()}
	addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	for _, a := range addrs {
		r.Addrs = append(r.Addrs, a.IPNet.String())
	}
	routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
	for _, rt := range routes {
		if rt.Gw != nil {
			r.Gateway = rt.Gw.String()
		}
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	r.Hostname = unix.ByteSliceToString(uts.Nodename[:])
	b, _ := json.Marshal(r)
	fmt.Printf("RESULT %s\n", b)
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
