package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/internal/fakevmm"
)

// fakeNetwork hands out leases from 10.77.0.0/24 (lowest free address
// first) and records what the daemon asked of it.
type fakeNetwork struct {
	mu     sync.Mutex
	inUse  map[string]daemon.Lease // by TAP
	events []string
	starts [][]daemon.Lease
}

func newFakeNetwork() *fakeNetwork { return &fakeNetwork{inUse: map[string]daemon.Lease{}} }

func (n *fakeNetwork) Start(_ context.Context, leases []daemon.Lease) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.inUse = map[string]daemon.Lease{}
	for _, l := range leases {
		n.inUse[l.TAP] = l
	}
	n.starts = append(n.starts, leases)
	return nil
}

func (n *fakeNetwork) Attach(_ context.Context, vmID string) (daemon.Lease, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for host := 2; host < 255; host++ {
		addr := netip.AddrFrom4([4]byte{10, 77, 0, byte(host)})
		if slices.ContainsFunc(slices.Collect(mapValues(n.inUse)), func(l daemon.Lease) bool { return l.Address.Addr() == addr }) {
			continue
		}
		l := daemon.Lease{
			VMID: vmID, TAP: "bx" + vmID, MAC: fmt.Sprintf("52:54:00:00:00:%02x", host),
			Address: netip.PrefixFrom(addr, 24), Gateway: netip.MustParseAddr("10.77.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("10.77.0.1")},
		}
		n.inUse[l.TAP] = l
		n.events = append(n.events, "attach "+vmID)
		return l, nil
	}
	return daemon.Lease{}, fmt.Errorf("no free address")
}

func (n *fakeNetwork) Detach(_ context.Context, l daemon.Lease) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.inUse, l.TAP)
	n.events = append(n.events, "detach "+l.VMID)
	return nil
}

func (n *fakeNetwork) Close() error { return nil }

func (n *fakeNetwork) Events() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}

func (n *fakeNetwork) Held(vmID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.inUse["bx"+vmID]
	return ok
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// fakeStorage makes sparse files in a folder.
type fakeStorage struct {
	dir       string
	mu        sync.Mutex
	events    []string
	failClone error // guarded by mu
}

func (s *fakeStorage) path(vmID string) string { return filepath.Join(s.dir, vmID+".img") }

func (s *fakeStorage) CreateDisk(_ context.Context, vmID string, size int64) (string, error) {
	s.mu.Lock()
	s.events = append(s.events, "create "+vmID)
	s.mu.Unlock()
	f, err := os.OpenFile(s.path(vmID), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return f.Name(), f.Truncate(size)
}

func (s *fakeStorage) DeleteDisk(_ context.Context, vmID string) error {
	s.mu.Lock()
	s.events = append(s.events, "delete "+vmID)
	s.mu.Unlock()
	err := os.Remove(s.path(vmID))
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

func (s *fakeStorage) CloneDisk(_ context.Context, src, dst string, live bool) (daemon.DiskClone, error) {
	s.mu.Lock()
	s.events = append(s.events, fmt.Sprintf("clone %s %s live=%v", src, dst, live))
	fail := s.failClone
	s.mu.Unlock()
	if fail != nil {
		return daemon.DiskClone{}, fail
	}
	// The fake's disks are sparse and empty: a clone of the same size is
	// a faithful copy.
	fi, err := os.Stat(s.path(src))
	if err != nil {
		return daemon.DiskClone{}, err
	}
	f, err := os.OpenFile(s.path(dst), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return daemon.DiskClone{}, err
	}
	defer f.Close()
	return daemon.DiskClone{Path: f.Name(), Method: "copy"}, f.Truncate(fi.Size())
}

func (s *fakeStorage) setFailClone(err error) {
	s.mu.Lock()
	s.failClone = err
	s.mu.Unlock()
}

func (s *fakeStorage) Events() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *fakeStorage) Exists(vmID string) bool {
	_, err := os.Stat(s.path(vmID))
	return err == nil
}

// fakeProbe reads the fake guest's identity through its agent, as the real
// probe reads a Linux guest's. probeHook, if set, may alter the facts
// (a test's way to make one copy fail a check).
func fakeProbe(ctx context.Context, c *agent.Client, vmDir string) (daemon.GuestFacts, error) {
	sent := time.Now()
	g, err := fakevmm.ReadGuest(ctx, c, vmDir)
	if err != nil {
		return daemon.GuestFacts{}, err
	}
	f := daemon.GuestFacts{Hostname: g.Hostname, Time: g.Time(), Sent: sent, Received: time.Now(), Random: g.Random()}
	if p, err := netip.ParsePrefix(g.Address); err == nil {
		f.Addrs = []netip.Addr{p.Addr()}
	}
	probeMu.Lock()
	hook := probeHook
	probeMu.Unlock()
	if hook != nil {
		hook(&f)
	}
	return f, nil
}

var (
	probeMu   sync.Mutex
	probeHook func(*daemon.GuestFacts) // guarded by probeMu
)

// setProbeHook installs hook for the test's duration.
func setProbeHook(t testing.TB, hook func(*daemon.GuestFacts)) {
	probeMu.Lock()
	probeHook = hook
	probeMu.Unlock()
	t.Cleanup(func() {
		probeMu.Lock()
		probeHook = nil
		probeMu.Unlock()
	})
}
