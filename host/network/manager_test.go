package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/boxd-dev/boxd/host/daemon"
	vnet "github.com/boxd-dev/boxd/virtio/net"
	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
)

// newManager starts a Manager in a fresh namespace.
func newManager(t *testing.T, ns int, dir string, inUse []daemon.Lease) *Manager {
	t.Helper()
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 203.0.113.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{StateDir: dir, NetNSFd: ns, ResolvConf: resolv, GuestTCPPorts: []uint16{9998}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background(), inUse); err != nil {
		m.Close()
		t.Fatalf("Start: %v", err)
	}
	return m
}

func attach(t *testing.T, m *Manager, id string) daemon.Lease {
	t.Helper()
	l, err := m.Attach(context.Background(), id)
	if err != nil {
		t.Fatalf("Attach(%s): %v", id, err)
	}
	return l
}

func nftAt(t *testing.T, ns int) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// vmRuleTags returns the tag of every per-VM rule, in chain order.
func vmRuleTags(t *testing.T, ns int) []string {
	t.Helper()
	rules, err := nftAt(t, ns).GetRules(bridgeTable(), preroutingChain())
	if err != nil {
		t.Fatalf("list prerouting rules: %v", err)
	}
	var tags []string
	for _, r := range rules {
		tag, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		tags = append(tags, tag)
	}
	return tags
}

// checkTAP checks that l's TAP is what the monitor expects and isolated on
// the bridge.
func checkTAP(t *testing.T, ns int, l daemon.Lease) {
	t.Helper()
	nl := nlAt(t, ns)
	link, err := nl.LinkByName(l.TAP)
	if err != nil {
		t.Fatalf("TAP %s: %v", l.TAP, err)
	}
	tap, ok := link.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("%s is a %s, want a tuntap", l.TAP, link.Type())
	}
	want := netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR
	if tap.Mode != netlink.TUNTAP_MODE_TAP || tap.Flags != want || tap.NonPersist {
		t.Errorf("%s: mode %v flags %#x non-persist %v, want tap, %#x, persistent", l.TAP, tap.Mode, tap.Flags, tap.NonPersist, want)
	}
	br, err := nl.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	if tap.MasterIndex != br.Attrs().Index {
		t.Errorf("%s: master %d, want the bridge (%d)", l.TAP, tap.MasterIndex, br.Attrs().Index)
	}
	if tap.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 || tap.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: multi-queue or down: %+v", l.TAP, tap.Attrs().Flags)
	}
	pi, err := nl.LinkGetProtinfo(link)
	if err != nil {
		t.Fatal(err)
	}
	if !pi.Isolated {
		t.Errorf("%s: bridge port not isolated", l.TAP)
	}
	// The monitor attaches by name with its own flags; the kernel refuses
	// a mismatch.
	inNS(t, ns, func() error {
		tp, err := vnet.OpenTAP(l.TAP)
		if err != nil {
			return err
		}
		return tp.Close()
	})
}

func linkExists(t *testing.T, ns int, name string) bool {
	t.Helper()
	_, err := nlAt(t, ns).LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestManagerLifecycle(t *testing.T) {
	requireNetAdmin(t)
	ns := newNS(t)
	dir := t.TempDir()
	m := newManager(t, ns, dir, nil)
	ctx := context.Background()

	// The bridge carries the gateway.
	nl := nlAt(t, ns)
	br, err := nl.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("bridge: type %s flags %v", br.Type(), br.Attrs().Flags)
	}
	addrs, err := nl.AddrList(br, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.88.0.1/16" {
		t.Errorf("bridge addresses %v (%v), want 10.88.0.1/16", addrs, err)
	}
	if got := readSysctl(t, ns, "net/ipv4/ip_forward"); got != "1\n" {
		t.Errorf("ip_forward = %q, want 1", got)
	}

	ids := []string{"00000000000a", "00000000000b", "00000000000c"}
	var leases []daemon.Lease
	for _, id := range ids {
		l := attach(t, m, id)
		checkTAP(t, ns, l)
		leases = append(leases, l)
	}
	want := daemon.Lease{
		VMID: ids[0], TAP: "bx" + ids[0], MAC: "02:62:78:58:00:02",
		Address: netip.MustParsePrefix("10.88.0.2/16"),
		Gateway: netip.MustParseAddr("10.88.0.1"),
		DNS:     []netip.Addr{netip.MustParseAddr("10.88.0.1")},
	}
	if diff := cmp.Diff(want, leases[0], cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("first lease (-want +got):\n%s", diff)
	}
	var got []string
	for _, l := range leases {
		got = append(got, l.Address.String())
	}
	if diff := cmp.Diff([]string{"10.88.0.2/16", "10.88.0.3/16", "10.88.0.4/16"}, got); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	// Attach is idempotent for a VM that holds a lease.
	if again := attach(t, m, ids[1]); again.Address != leases[1].Address {
		t.Errorf("second Attach of %s: %s, want %s", ids[1], again.Address, leases[1].Address)
	}
	wantTags := func(ids ...string) []string {
		var tags []string
		for _, id := range ids {
			for range 4 {
				tags = append(tags, vmTag(id))
			}
		}
		return tags
	}
	tags := vmRuleTags(t, ns)
	slices.Sort(tags)
	if diff := cmp.Diff(wantTags(ids...), tags); diff != "" {
		t.Errorf("per-VM rules (-want +got):\n%s", diff)
	}
	checkBaseRules(t, ns)

	// Restart: the daemon hands back the first two leases only; the
	// third was lost, so its TAP and rules go and its address is free
	// again, but the cursor still moves on past it.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m = newManager(t, ns, dir, leases[:2])
	if linkExists(t, ns, leases[2].TAP) {
		t.Errorf("stale TAP %s survived a restart", leases[2].TAP)
	}
	checkTAP(t, ns, leases[0])
	if diff := cmp.Diff(wantTags(ids[:2]...), vmRuleTags(t, ns)); diff != "" {
		t.Errorf("per-VM rules after restart (-want +got):\n%s", diff)
	}
	d := attach(t, m, "00000000000d")
	if d.Address.String() != "10.88.0.5/16" {
		t.Errorf("after restart, new lease %s, want 10.88.0.5/16 (next after the cursor)", d.Address)
	}

	// Detach removes the TAP and rules, and is idempotent.
	for range 2 {
		if err := m.Detach(ctx, leases[0]); err != nil {
			t.Fatalf("Detach: %v", err)
		}
	}
	if linkExists(t, ns, leases[0].TAP) {
		t.Errorf("TAP %s survived Detach", leases[0].TAP)
	}
	if diff := cmp.Diff(wantTags(ids[1], "00000000000d"), vmRuleTags(t, ns)); diff != "" {
		t.Errorf("per-VM rules after Detach (-want +got):\n%s", diff)
	}

	if err := m.Teardown(ctx); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	if diff := cmp.Diff([]string{"lo"}, names); diff != "" {
		t.Errorf("links after Teardown (-want +got):\n%s", diff)
	}
	tables, err := nftAt(t, ns).ListTables()
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 0 {
		t.Errorf("%d nftables tables after Teardown, want none", len(tables))
	}
	if _, err := os.Stat(recordPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record after Teardown: %v", err)
	}
}

// checkBaseRules lists the fixed chains back and checks their shape.
func checkBaseRules(t *testing.T, ns int) {
	t.Helper()
	c := nftAt(t, ns)
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ch := range chains {
		got = append(got, familyName(ch.Table.Family)+" "+ch.Table.Name+" "+ch.Name)
	}
	slices.Sort(got)
	want := []string{"bridge boxd forward", "bridge boxd prerouting", "inet boxd forward", "inet boxd input", "inet boxd postrouting", "inet boxd prerouting"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chains (-want +got):\n%s", diff)
	}
	count := map[string]int{chainPrerouting: 1, chainInput: 7, chainForward: 3, chainPostrouting: 1}
	for name, n := range count {
		rules, err := c.GetRules(inetTable(), &nftables.Chain{Name: name, Table: inetTable()})
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != n {
			t.Errorf("inet %s: %d rules, want %d", name, len(rules), n)
		}
		if name == chainPostrouting && len(rules) == 1 {
			last := rules[0].Exprs[len(rules[0].Exprs)-1]
			if _, ok := last.(*expr.Masq); !ok {
				t.Errorf("postrouting rule ends in %T, want masquerade", last)
			}
		}
	}
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return "other"
}

// BenchmarkAttachDetach measures a VM's whole network life: TAP, port
// setup, rules and record, then their removal.
func BenchmarkAttachDetach(b *testing.B) {
	requireNetAdmin(b)
	ns := newNS(b)
	m, err := New(Config{StateDir: b.TempDir(), NetNSFd: ns, ResolvConf: "/dev/null"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Start(ctx, nil); err != nil {
		b.Fatal(err)
	}
	defer m.Teardown(ctx)
	b.ResetTimer()
	for range b.N {
		l, err := m.Attach(ctx, "0000000000be")
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Detach(ctx, l); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttach measures what the network adds to a VM's boot.
func BenchmarkAttach(b *testing.B) {
	requireNetAdmin(b)
	m, err := New(Config{StateDir: b.TempDir(), NetNSFd: newNS(b), ResolvConf: "/dev/null"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := m.Start(ctx, nil); err != nil {
		b.Fatal(err)
	}
	defer m.Teardown(ctx)
	b.ResetTimer()
	for range b.N {
		l, err := m.Attach(ctx, "0000000000be")
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := m.Detach(ctx, l); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
