package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/boxd-dev/boxd/host/daemon"
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
	dir    string
	mu     sync.Mutex
	events []string
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

func (s *fakeStorage) Events() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *fakeStorage) Exists(vmID string) bool {
	_, err := os.Stat(s.path(vmID))
	return err == nil
}
