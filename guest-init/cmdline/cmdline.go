package cmdline

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Keys of the boxd namespace. docs/guest-cmdline.md describes each one.
const (
	KeyIP           = "boxd.ip"
	KeyGateway      = "boxd.gw"
	KeyDNS          = "boxd.dns"
	KeyHostname     = "boxd.hostname"
	KeySeed         = "boxd.seed"
	KeyTime         = "boxd.time"
	KeyRoot         = "boxd.root"
	KeyRootFSType   = "boxd.rootfstype"
	KeyAgentPort    = "boxd.agent_port"
	KeyTestPoweroff = "boxd.test_poweroff"
	KeyVerbose      = "boxd.verbose"
)

// Defaults of the keys that have one.
const (
	DefaultRootFSType = "ext4"
	// DefaultAgentPort is the agent's vsock port (agent/wire.VsockPort).
	DefaultAgentPort = 1024
)

// Bounds on values, so that a command line (at most 4 KiB) cannot make init
// allocate much or hand the kernel nonsense.
const (
	MaxSeed     = 256 // bytes, before hex encoding
	MaxHostname = 64
	MaxDNS      = 4
	maxRootPath = 128
)

// Config is what the host tells the guest at boot. The zero value of each
// field means "not given"; Parse fills in the defaults.
type Config struct {
	Address      netip.Prefix // boxd.ip: eth0's address and prefix length
	Gateway      netip.Addr   // boxd.gw: default route
	DNS          []netip.Addr // boxd.dns: resolv.conf nameservers, in order
	Hostname     string       // boxd.hostname
	Seed         []byte       // boxd.seed: credited to the kernel's entropy pool
	Time         time.Time    // boxd.time: CLOCK_REALTIME at boot (UTC)
	Root         string       // boxd.root: block device of the root disk; "" stays in the initramfs
	RootFSType   string       // boxd.rootfstype
	AgentPort    uint32       // boxd.agent_port: vsock port of the guest agent
	TestPoweroff bool         // boxd.test_poweroff: power off once the agent is ready (tests)
	// Quiet is the kernel's own "quiet" flag: init then logs only failures
	// and one summary line (each console byte is a VM exit).
	Quiet bool
	// Verbose (boxd.verbose) makes init log every step even when Quiet.
	Verbose bool
}

// LogSteps reports whether init logs each step: unless the kernel was told
// to be quiet, or boxd.verbose overrides it.
func (c Config) LogSteps() bool { return !c.Quiet || c.Verbose }

// Default returns the Config of an empty command line.
func Default() Config {
	return Config{RootFSType: DefaultRootFSType, AgentPort: DefaultAgentPort}
}

// Parse reads the boxd keys of a kernel command line, as found in
// /proc/cmdline. It returns the defaults overlaid with every valid key (the
// last occurrence of a key wins, as for the kernel's own parameters) and,
// joined into one error, a description of every key it had to ignore.
func Parse(cmdline string) (Config, error) {
	c := Default()
	var errs []error
	for _, a := range Split(cmdline) {
		if a.Key == "quiet" && !a.HasValue {
			c.Quiet = true
			continue
		}
		if !strings.HasPrefix(a.Key, "boxd.") {
			continue
		}
		if err := c.set(a); err != nil {
			errs = append(errs, err)
		}
	}
	return c, errors.Join(errs...)
}

func (c *Config) set(a Arg) error {
	bad := func(err error) error { return fmt.Errorf("%s=%q: %w", a.Key, a.Value, err) }
	if !a.HasValue && a.Key != KeyTestPoweroff && a.Key != KeyVerbose {
		return fmt.Errorf("%s: missing =value", a.Key)
	}
	v := a.Value
	switch a.Key {
	case KeyIP:
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return bad(err)
		}
		if p.Addr().Zone() != "" {
			return bad(errors.New("zones are not allowed"))
		}
		c.Address = p
	case KeyGateway:
		ip, err := parseAddr(v)
		if err != nil {
			return bad(err)
		}
		c.Gateway = ip
	case KeyDNS:
		var dns []netip.Addr
		for s := range strings.SplitSeq(v, ",") {
			ip, err := parseAddr(s)
			if err != nil {
				return bad(err)
			}
			dns = append(dns, ip)
		}
		if len(dns) > MaxDNS {
			return bad(fmt.Errorf("%d servers, at most %d", len(dns), MaxDNS))
		}
		c.DNS = dns
	case KeyHostname:
		if err := checkHostname(v); err != nil {
			return bad(err)
		}
		c.Hostname = v
	case KeySeed:
		if len(v) > 2*MaxSeed {
			return bad(fmt.Errorf("longer than %d bytes", MaxSeed))
		}
		b, err := hex.DecodeString(v)
		if err != nil {
			return bad(err)
		}
		if len(b) == 0 {
			return bad(errors.New("empty"))
		}
		c.Seed = b
	case KeyTime:
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return bad(err)
		}
		if ns <= 0 {
			return bad(errors.New("not after 1970"))
		}
		c.Time = time.Unix(0, ns).UTC()
	case KeyRoot:
		if err := checkRoot(v); err != nil {
			return bad(err)
		}
		c.Root = v
	case KeyRootFSType:
		if v == "" || len(v) > 16 || strings.ContainsFunc(v, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
			return bad(errors.New("want a filesystem name such as ext4"))
		}
		c.RootFSType = v
	case KeyAgentPort:
		// VMADDR_PORT_ANY (2^32-1) asks the kernel to pick; the host must know it.
		p, err := strconv.ParseUint(v, 10, 32)
		if err != nil || p == 0 || p == 1<<32-1 {
			return bad(errors.New("want a port in 1..4294967294"))
		}
		c.AgentPort = uint32(p)
	case KeyTestPoweroff, KeyVerbose:
		var on bool
		switch v {
		case "", "1":
			on = true
		case "0":
		default:
			return bad(errors.New("want 0 or 1"))
		}
		if a.Key == KeyVerbose {
			c.Verbose = on
		} else {
			c.TestPoweroff = on
		}
	default:
		return fmt.Errorf("%s: unknown key", a.Key)
	}
	return nil
}

// parseAddr accepts a plain IPv4 or IPv6 address (no zone: a resolver or a
// route on eth0 needs none).
func parseAddr(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if ip.Zone() != "" {
		return netip.Addr{}, errors.New("zones are not allowed")
	}
	return ip, nil
}

// checkHostname accepts what sethostname(2) and resolvers agree on: letters,
// digits, '-' and '.', at most 64 bytes.
func checkHostname(h string) error {
	if h == "" || len(h) > MaxHostname {
		return fmt.Errorf("want 1..%d characters", MaxHostname)
	}
	if strings.ContainsFunc(h, func(r rune) bool {
		return !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return errors.New("want letters, digits, '-' and '.'")
	}
	return nil
}

// checkRoot accepts a device node path under /dev, without "..": init mounts
// whatever this names as its root.
func checkRoot(p string) error {
	rest, ok := strings.CutPrefix(p, "/dev/")
	if !ok || rest == "" || len(p) > maxRootPath {
		return errors.New("want a device path such as /dev/vda")
	}
	if slices.Contains(strings.Split(rest, "/"), "..") || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == '"' || r > '~' }) {
		return errors.New("want a device path such as /dev/vda")
	}
	return nil
}

// Args renders c as kernel command-line arguments, in a fixed order, leaving
// out what is unset or at its default. Values never need quoting: Parse
// accepts none that contain spaces or quotes.
func (c Config) Args() []string {
	var out []string
	add := func(k, v string) { out = append(out, k+"="+v) }
	if c.Address.IsValid() {
		add(KeyIP, c.Address.String())
	}
	if c.Gateway.IsValid() {
		add(KeyGateway, c.Gateway.String())
	}
	if len(c.DNS) > 0 {
		s := make([]string, len(c.DNS))
		for i, d := range c.DNS {
			s[i] = d.String()
		}
		add(KeyDNS, strings.Join(s, ","))
	}
	if c.Hostname != "" {
		add(KeyHostname, c.Hostname)
	}
	if len(c.Seed) > 0 {
		add(KeySeed, hex.EncodeToString(c.Seed))
	}
	if !c.Time.IsZero() {
		add(KeyTime, strconv.FormatInt(c.Time.UnixNano(), 10))
	}
	if c.Root != "" {
		add(KeyRoot, c.Root)
	}
	if c.RootFSType != "" && c.RootFSType != DefaultRootFSType {
		add(KeyRootFSType, c.RootFSType)
	}
	if c.AgentPort != 0 && c.AgentPort != DefaultAgentPort {
		add(KeyAgentPort, strconv.FormatUint(uint64(c.AgentPort), 10))
	}
	if c.TestPoweroff {
		add(KeyTestPoweroff, "1")
	}
	if c.Verbose {
		add(KeyVerbose, "1")
	}
	if c.Quiet {
		out = append(out, "quiet")
	}
	return out
}

// String renders c as a command-line fragment.
func (c Config) String() string { return strings.Join(c.Args(), " ") }
