package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/vishvananda/netlink"
)

// tapPrefix starts every TAP name the Manager creates: "bx" + a 12-digit VM
// ID fits IFNAMSIZ.
const tapPrefix = "bx"

// ensureBridge creates the bridge, or adopts an existing one, gives it the
// gateway address and brings it up.
func (m *Manager) ensureBridge() (netlink.Link, error) {
	name := m.cfg.Bridge
	link, err := m.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac(m.pool.gateway)}}
		if err := m.nl.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("network: create bridge %s: %w", name, err)
		}
		if link, err = m.nl.LinkByName(name); err != nil {
			return nil, fmt.Errorf("network: bridge %s: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("network: bridge %s: %w", name, err)
	case link.Type() != "bridge":
		return nil, fmt.Errorf("network: %s exists and is a %s, not a bridge; choose another name", name, link.Type())
	}
	// A bridge without a MAC of its own takes its lowest port's, so the
	// gateway's MAC would change under the guests as VMs come and go.
	if err := m.nl.LinkSetHardwareAddr(link, mac(m.pool.gateway)); err != nil {
		return nil, fmt.Errorf("network: set MAC of %s: %w", name, err)
	}
	gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(m.pool.gateway, m.cfg.Subnet.Bits()))}
	if err := m.nl.AddrReplace(link, gw); err != nil {
		return nil, fmt.Errorf("network: address %s on %s: %w", gw.IPNet, name, err)
	}
	if err := m.nl.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("network: bring up %s: %w", name, err)
	}
	return link, nil
}

// ensureTAP creates l's TAP if it is missing and makes it an isolated, up
// port of the bridge. The TAP is persistent and owned by this process's
// user, with the flags the monitor attaches with (virtio/net.OpenTAP:
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, single queue); the kernel refuses an
// attach whose multi-queue flag differs from the device's.
func (m *Manager) ensureTAP(l daemon.Lease, bridge netlink.Link) error {
	link, err := m.nl.LinkByName(l.TAP)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: l.TAP},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			Owner:     uint32(os.Geteuid()),
			Group:     uint32(os.Getegid()),
		}
		// TUNSETIFF creates the device in the calling thread's namespace.
		if err := m.ns.do(func() error { return m.nl.LinkAdd(tap) }); err != nil {
			return fmt.Errorf("network: create TAP %s: %w", l.TAP, err)
		}
		if link, err = m.nl.LinkByName(l.TAP); err != nil {
			return fmt.Errorf("network: TAP %s: %w", l.TAP, err)
		}
	case err != nil:
		return fmt.Errorf("network: TAP %s: %w", l.TAP, err)
	}
	if t, ok := link.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TAP || t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		return fmt.Errorf("network: %s exists and is not a single-queue TAP", l.TAP)
	}
	hw, err := net.ParseMAC(l.MAC)
	if err != nil {
		return fmt.Errorf("network: lease of %s: %w", l.VMID, err)
	}
	// The bridge keeps each port's own MAC as a local address, so the TAP's
	// must differ from the guest's or frames for the guest would stop at
	// the host. Derive it from the guest's by setting a bit no guest MAC
	// has set (guest MACs start 0x02).
	host := append(net.HardwareAddr(nil), hw...)
	host[0] ^= 0x04
	steps := []struct {
		what string
		fn   func() error
	}{
		{"set MAC", func() error { return m.nl.LinkSetHardwareAddr(link, host) }},
		{"enslave", func() error { return m.nl.LinkSetMaster(link, bridge) }},
		{"isolate", func() error { return m.nl.LinkSetIsolated(link, true) }},
		{"bring up", func() error { return m.nl.LinkSetUp(link) }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return fmt.Errorf("network: %s %s: %w", s.what, l.TAP, err)
		}
	}
	return nil
}

// deleteLink deletes the named link; one already gone is not an error.
func (m *Manager) deleteLink(name string) error {
	link, err := m.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("network: %s: %w", name, err)
	}
	if err := m.nl.LinkDel(link); err != nil {
		return fmt.Errorf("network: delete %s: %w", name, err)
	}
	return nil
}

// bridgeTAPs lists the names of the bridge's ports that look like the
// Manager's TAPs.
func (m *Manager) bridgeTAPs(bridge netlink.Link) ([]string, error) {
	links, err := m.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("network: list links: %w", err)
	}
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex == bridge.Attrs().Index && l.Type() == "tuntap" && len(a.Name) > len(tapPrefix) && a.Name[:len(tapPrefix)] == tapPrefix {
			names = append(names, a.Name)
		}
	}
	return names, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
