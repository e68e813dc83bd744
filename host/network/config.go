package network

import (
	"errors"
	"fmt"
	"net/netip"
)

// Defaults for the fields of Config left zero.
const (
	DefaultBridge     = "boxd0"
	DefaultResolvConf = "/etc/resolv.conf"
	// Table names the nftables tables (one inet, one bridge) the Manager owns.
	Table = "boxd"
)

// DefaultSubnet is the guests' subnet when Config.Subnet is not set.
var DefaultSubnet = netip.MustParsePrefix("10.88.0.0/16")

// Config says where and how the Manager builds the VMs' network.
type Config struct {
	// StateDir holds the Manager's own record (network.json). Required.
	StateDir string
	// Bridge is the host bridge's name (default "boxd0").
	Bridge string
	// Subnet is the guests' IPv4 subnet (default 10.88.0.0/16), between /8
	// and /29. Its first host address is the gateway, on the bridge.
	Subnet netip.Prefix
	// ResolvConf lists the resolvers the DNS forwarder relays to (default
	// /etc/resolv.conf). It is read again whenever it changes.
	ResolvConf string
	// GuestTCPPorts are the TCP ports on the gateway address that guests
	// may connect to (the daemon's guest API, if it has one), besides DNS.
	GuestTCPPorts []uint16
	// NetNSFd, if not zero, is an open network namespace to build
	// everything in instead of the process's own (tests use it).
	NetNSFd int
}

func (c Config) withDefaults() (Config, error) {
	if c.StateDir == "" {
		return c, errors.New("network: no state directory")
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if len(c.Bridge) > maxIfname {
		return c, fmt.Errorf("network: bridge name %q longer than %d bytes", c.Bridge, maxIfname)
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	c.Subnet = c.Subnet.Masked()
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() < 8 || c.Subnet.Bits() > 29 {
		return c, fmt.Errorf("network: subnet %s: want IPv4 between /8 and /29", c.Subnet)
	}
	if c.ResolvConf == "" {
		c.ResolvConf = DefaultResolvConf
	}
	for _, p := range c.GuestTCPPorts {
		if p == 0 {
			return c, errors.New("network: guest TCP port 0")
		}
	}
	return c, nil
}

// maxIfname is IFNAMSIZ less the terminating NUL.
const maxIfname = 15
