package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/agent/wire"
)

// System applies the lifecycle changes the host asks for after boot, restore
// or fork. Linux is the real one; tests substitute a fake.
type System interface {
	Reseed(seed []byte) error
	SetNetwork(cfg wire.NetworkConfig) error
	SetClock(t time.Time) error
}

// Linux applies lifecycle changes to the running kernel, in the agent's own
// namespaces.
type Linux struct {
	// ResolvConf is written with the DNS servers (default /etc/resolv.conf).
	ResolvConf string
}

// Reseed writes seed to /dev/urandom, which mixes it in without crediting,
// and adds it with RNDADDENTROPY, which also credits it: a forked guest must
// not wait on, or reuse, its parent's entropy.
func (l *Linux) Reseed(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(seed); err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	if err := addEntropy(int(f.Fd()), seed); err != nil {
		return fmt.Errorf("reseed: RNDADDENTROPY: %w", err)
	}
	// Crediting entropy does not reseed a CRNG that is already initialised
	// until its next scheduled reseed (up to a minute away): until then a
	// fork and its parent keep drawing the same bytes from /dev/urandom
	// (seen in the e2e fork test). RNDRESEEDCRNG reseeds it now, as the
	// kernel's own VM-fork path (add_vmfork_randomness) does.
	if err := unix.IoctlSetInt(int(f.Fd()), unix.RNDRESEEDCRNG, 0); err != nil {
		return fmt.Errorf("reseed: RNDRESEEDCRNG: %w", err)
	}
	return nil
}

// SetClock sets CLOCK_REALTIME.
func (l *Linux) SetClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set clock: %w", err)
	}
	return nil
}

// SetNetwork configures the interface (MAC, address, up), the default route,
// resolv.conf and the hostname, in that order; it stops at the first failure.
func (l *Linux) SetNetwork(cfg wire.NetworkConfig) error {
	if err := validateNetwork(cfg); err != nil {
		return err
	}
	ifname := cfg.Interface
	if ifname == "" {
		ifname = "eth0"
	}
	if cfg.MAC != "" || cfg.Address != "" || cfg.Gateway != "" {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("set network: link %s: %w", ifname, err)
		}
		if err := configureLink(link, cfg); err != nil {
			return fmt.Errorf("set network: %s: %w", ifname, err)
		}
	}
	if len(cfg.DNS) > 0 {
		if err := l.writeResolvConf(cfg.DNS); err != nil {
			return fmt.Errorf("set network: %w", err)
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("set network: hostname: %w", err)
		}
	}
	return nil
}

func validateNetwork(cfg wire.NetworkConfig) error {
	bad := func(format string, args ...any) error { return wire.Errorf(wire.CodeInvalid, format, args...) }
	if cfg.MAC != "" {
		if _, err := net.ParseMAC(cfg.MAC); err != nil {
			return bad("mac %q: %v", cfg.MAC, err)
		}
	}
	if cfg.Address != "" {
		if _, _, err := net.ParseCIDR(cfg.Address); err != nil {
			return bad("address %q: %v", cfg.Address, err)
		}
	}
	if cfg.Gateway != "" && net.ParseIP(cfg.Gateway) == nil {
		return bad("gateway %q is not an IP address", cfg.Gateway)
	}
	for _, d := range cfg.DNS {
		if net.ParseIP(d) == nil {
			return bad("dns server %q is not an IP address", d)
		}
	}
	if h := cfg.Hostname; len(h) > 64 || strings.ContainsFunc(h, func(r rune) bool {
		return !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return bad("hostname %q", h)
	}
	return nil
}

func configureLink(link netlink.Link, cfg wire.NetworkConfig) error {
	if cfg.MAC != "" {
		hw, _ := net.ParseMAC(cfg.MAC)
		if err := netlink.LinkSetDown(link); err != nil {
			return fmt.Errorf("down: %w", err)
		}
		if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
			return fmt.Errorf("mac: %w", err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if cfg.Address != "" {
		addr, err := netlink.ParseAddr(cfg.Address)
		if err != nil {
			return err
		}
		family := netlink.FAMILY_V4
		if addr.IP.To4() == nil {
			family = netlink.FAMILY_V6
		}
		old, err := netlink.AddrList(link, family)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		for _, a := range old {
			if a.IP.IsLinkLocalUnicast() || a.Equal(*addr) {
				continue
			}
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove %v: %w", a.IPNet, err)
			}
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %v: %w", addr.IPNet, err)
		}
	}
	if cfg.Gateway != "" {
		gw := net.ParseIP(cfg.Gateway)
		dst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if gw.To4() == nil {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %v: %w", gw, err)
		}
	}
	return nil
}

// writeResolvConf replaces the file atomically: a resolver reading it
// concurrently sees the old or the new servers, not half of each.
func (l *Linux) writeResolvConf(servers []string) error {
	path := l.ResolvConf
	if path == "" {
		path = "/etc/resolv.conf"
	}
	var b strings.Builder
	b.WriteString("# written by boxd-agent\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".resolv.conf.boxd-*")
	if err != nil {
		return err
	}
	_, werr := f.WriteString(b.String())
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), 0o644)); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

func (s *Server) reseed(_ context.Context, a wire.ReseedArgs) (any, error) {
	if len(a.Seed) == 0 || len(a.Seed) > wire.MaxSeed {
		return nil, wire.Errorf(wire.CodeInvalid, "seed of %d bytes, want 1..%d", len(a.Seed), wire.MaxSeed)
	}
	return nil, s.opts.System.Reseed(a.Seed)
}

func (s *Server) setNetwork(_ context.Context, cfg wire.NetworkConfig) (any, error) {
	if err := validateNetwork(cfg); err != nil {
		return nil, err
	}
	return nil, s.opts.System.SetNetwork(cfg)
}

func (s *Server) setClock(_ context.Context, a wire.ClockArgs) (any, error) {
	if a.UnixNano <= 0 {
		return nil, wire.Errorf(wire.CodeInvalid, "clock %d before 1970", a.UnixNano)
	}
	return nil, s.opts.System.SetClock(time.Unix(0, a.UnixNano))
}
