package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotStarted is returned by Attach and Detach before Start.
var ErrNotStarted = errors.New("network: not started")

// Manager builds and tears down the VMs' network on one host. It
// implements daemon.Network. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config
	ns  namespace
	nl  *netlink.Handle
	rs  ruleset

	mu      sync.Mutex // guards the fields below and serialises host changes
	pool    *pool
	leases  map[string]daemon.Lease // by VM ID
	dns     *forwarder
	started bool
	closed  bool
}

var _ daemon.Network = (*Manager)(nil)

// New returns a Manager for cfg; it changes nothing on the host until
// Start.
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, ns: namespace{fd: cfg.NetNSFd}, pool: newPool(cfg.Subnet), leases: make(map[string]daemon.Lease)}
	// Route only: a handle on every family fails where a module (xfrm_user)
	// is missing; forget opens its own conntrack handle.
	if m.nl, err = m.netlinkHandle(unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("network: netlink: %w", err)
	}
	m.rs = ruleset{bridge: cfg.Bridge, gateway: m.pool.gateway, subnet: cfg.Subnet, guestPorts: cfg.GuestTCPPorts}
	return m, nil
}

func (m *Manager) netlinkHandle(family int) (*netlink.Handle, error) {
	if m.ns.current() {
		return netlink.NewHandle(family)
	}
	return netlink.NewHandleAt(netns.NsHandle(m.cfg.NetNSFd), family)
}

// Gateway returns the host's address on the bridge: the guests' gateway
// and DNS server.
func (m *Manager) Gateway() netip.Addr { return m.pool.gateway }

func (m *Manager) nft() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if !m.ns.current() {
		opts = append(opts, nftables.WithNetNSFd(m.cfg.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("network: nftables: %w", err)
	}
	return c, nil
}

// Start builds the bridge, enables forwarding, installs the ruleset with
// the rules of inUse, re-creates inUse's missing TAPs, deletes the TAPs of
// leases the daemon no longer holds and starts the DNS forwarder. The
// daemon's inUse is authoritative: a lease in the Manager's own record but
// not in inUse was lost between Attach and the daemon's store and is freed.
func (m *Manager) Start(ctx context.Context, inUse []daemon.Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("network: start after close")
	}
	if m.started {
		return errors.New("network: started twice")
	}
	rec := loadRecord(m.cfg.StateDir)
	if rec.Next.IsValid() && m.pool.usable(rec.Next) {
		m.pool.next = rec.Next
	}
	for _, l := range inUse {
		if err := m.checkLease(l); err != nil {
			return err
		}
		if err := m.pool.take(l.Address.Addr(), l.VMID); err != nil {
			return err
		}
		m.leases[l.VMID] = l
	}
	bridge, err := m.ensureBridge()
	if err != nil {
		return err
	}
	if err := m.ns.sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	c, err := m.nft()
	if err != nil {
		return err
	}
	if err := m.rs.install(c, m.sortedLeases()); err != nil {
		return err
	}
	// Stale TAPs: the record's and any "bx" port of the bridge.
	stale := make(map[string]bool)
	for _, l := range rec.Leases {
		stale[l.TAP] = true
	}
	ports, err := m.bridgeTAPs(bridge)
	if err != nil {
		return err
	}
	for _, p := range ports {
		stale[p] = true
	}
	for _, l := range m.leases {
		delete(stale, l.TAP)
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.ensureTAP(l, bridge); err != nil {
			return err
		}
	}
	for tap := range stale {
		if err := m.deleteLink(tap); err != nil {
			return err
		}
	}
	fw, err := startForwarder(m.ns, m.pool.gateway, m.cfg.ResolvConf, m.cfg.Subnet)
	if err != nil {
		return err
	}
	m.dns = fw
	if err := m.save(); err != nil {
		fw.close()
		m.dns = nil
		return err
	}
	m.started = true
	return nil
}

// checkLease validates a lease handed back by the daemon.
func (m *Manager) checkLease(l daemon.Lease) error {
	if err := checkVMID(l.VMID); err != nil {
		return err
	}
	if l.TAP != tapPrefix+l.VMID {
		return fmt.Errorf("network: lease of %s names TAP %q, want %q", l.VMID, l.TAP, tapPrefix+l.VMID)
	}
	if l.Address.Bits() != m.cfg.Subnet.Bits() || !m.pool.usable(l.Address.Addr()) {
		return fmt.Errorf("network: lease of %s: %s is not a guest address of %s (did the subnet change?)", l.VMID, l.Address, m.cfg.Subnet)
	}
	return nil
}

// checkVMID accepts the daemon's VM IDs: 12 lowercase hex digits.
func checkVMID(id string) error {
	if len(id) != 12 {
		return fmt.Errorf("network: VM ID %q: want 12 lowercase hex digits", id)
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("network: VM ID %q: want 12 lowercase hex digits", id)
		}
	}
	return nil
}

// Attach leases an address to vmID and creates its TAP and rules. For a VM
// that already holds a lease it re-creates what is missing and returns
// the same lease.
//
// The context is checked before any change: once Attach has changed the
// host it finishes, so that a lease it made is never lost with an error.
func (m *Manager) Attach(ctx context.Context, vmID string) (daemon.Lease, error) {
	if err := checkVMID(vmID); err != nil {
		return daemon.Lease{}, err
	}
	if err := ctx.Err(); err != nil {
		return daemon.Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return daemon.Lease{}, ErrNotStarted
	}
	l, held := m.leases[vmID]
	if !held {
		a, err := m.pool.alloc(vmID)
		if err != nil {
			return daemon.Lease{}, err
		}
		l = daemon.Lease{
			VMID:    vmID,
			TAP:     tapPrefix + vmID,
			MAC:     mac(a).String(),
			Address: netip.PrefixFrom(a, m.cfg.Subnet.Bits()),
			Gateway: m.pool.gateway,
			DNS:     []netip.Addr{m.pool.gateway},
		}
	}
	if err := m.attach(l); err != nil {
		if !held {
			m.pool.free(l.Address.Addr())
			// Best effort: whatever part of the TAP and rules exists.
			_ = m.detach(l)
		}
		return daemon.Lease{}, err
	}
	m.leases[vmID] = l
	if err := m.save(); err != nil {
		return daemon.Lease{}, err
	}
	return l, nil
}

func (m *Manager) attach(l daemon.Lease) error {
	bridge, err := m.nl.LinkByName(m.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("network: bridge %s: %w", m.cfg.Bridge, err)
	}
	if err := m.ensureTAP(l, bridge); err != nil {
		return err
	}
	c, err := m.nft()
	if err != nil {
		return err
	}
	if err := deleteVMRules(c, l.VMID); err != nil {
		return err
	}
	if err := addVMRules(c, preroutingChain(), l); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: rules of %s: %w", l.VMID, err)
	}
	return nil
}

// Detach deletes l's TAP and rules, forgets the neighbour and conntrack
// entries of its address and frees the address. What is already gone is
// not an error.
func (m *Manager) Detach(ctx context.Context, l daemon.Lease) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return ErrNotStarted
	}
	if err := m.detach(l); err != nil {
		return err
	}
	if held, ok := m.leases[l.VMID]; ok && held.Address == l.Address {
		delete(m.leases, l.VMID)
		m.pool.free(l.Address.Addr())
	}
	return m.save()
}

func (m *Manager) detach(l daemon.Lease) error {
	c, err := m.nft()
	if err != nil {
		return err
	}
	if err := deleteVMRules(c, l.VMID); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: delete rules of %s: %w", l.VMID, err)
	}
	if l.TAP != "" {
		if err := m.deleteLink(l.TAP); err != nil {
			return err
		}
	}
	if l.Address.IsValid() {
		m.forget(l.Address.Addr())
	}
	return nil
}

// forget drops the host's neighbour entry and connection-tracking state
// of a freed address, so its next holder starts clean: no stale MAC, and
// no replies of the previous holder's connections (still arriving from
// the outside) translated to the new one. The conntrack dump walks the
// whole table, so one dump serves both directions. Both are caches that
// expire on their own; errors are ignored.
func (m *Manager) forget(a netip.Addr) {
	if bridge, err := m.nl.LinkByName(m.cfg.Bridge); err == nil {
		_ = m.nl.NeighDel(&netlink.Neigh{LinkIndex: bridge.Attrs().Index, Family: unix.AF_INET, IP: a.AsSlice()})
	}
	if ct, err := m.netlinkHandle(unix.NETLINK_NETFILTER); err == nil {
		_, _ = ct.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, addrFlows{a.AsSlice()})
		ct.Close()
	}
}

// addrFlows matches the flows an address started or was sent.
type addrFlows struct{ ip net.IP }

func (f addrFlows) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	return flow.Forward.SrcIP.Equal(f.ip) || flow.Forward.DstIP.Equal(f.ip)
}

// Close stops the DNS forwarder and releases the Manager's handles. The
// bridge, rules and TAPs stay: running VMs keep their network across a
// daemon restart.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.started = false
	if m.dns != nil {
		m.dns.close()
		m.dns = nil
	}
	m.nl.Close()
	return nil
}

// Teardown removes everything the Manager built: every lease's TAP, the
// bridge, both nftables tables and its record; then it closes the Manager.
// It needs no Start: a fresh Manager on the same Config cleans up after a
// daemon that is gone.
// It does not reset net.ipv4.ip_forward, which other software may need.
func (m *Manager) Teardown(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("network: teardown after close")
	}
	if m.dns != nil {
		m.dns.close()
		m.dns = nil
	}
	var errs []error
	rec := loadRecord(m.cfg.StateDir)
	taps := make(map[string]bool)
	for _, l := range rec.Leases {
		taps[l.TAP] = true
	}
	for _, l := range m.leases {
		taps[l.TAP] = true
	}
	if bridge, err := m.nl.LinkByName(m.cfg.Bridge); err == nil {
		ports, err := m.bridgeTAPs(bridge)
		errs = append(errs, err)
		for _, p := range ports {
			taps[p] = true
		}
	}
	for tap := range taps {
		errs = append(errs, m.deleteLink(tap))
	}
	errs = append(errs, m.deleteLink(m.cfg.Bridge))
	if c, err := m.nft(); err != nil {
		errs = append(errs, err)
	} else {
		deleteTables(c)
		if err := c.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("network: delete nftables tables: %w", err))
		}
	}
	if err := os.Remove(recordPath(m.cfg.StateDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("network: %w", err))
	}
	m.leases = make(map[string]daemon.Lease)
	m.pool = newPool(m.cfg.Subnet)
	m.mu.Unlock()
	errs = append(errs, m.Close())
	return errors.Join(errs...)
}

func (m *Manager) sortedLeases() []daemon.Lease {
	ls := make([]daemon.Lease, 0, len(m.leases))
	for _, l := range m.leases {
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(a, b daemon.Lease) int { return a.Address.Addr().Compare(b.Address.Addr()) })
	return ls
}

func (m *Manager) save() error {
	return saveRecord(m.cfg.StateDir, record{Next: m.pool.next, Leases: m.sortedLeases()})
}
