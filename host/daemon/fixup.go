package daemon

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/store"
)

// GuestFacts is what a fork's verification reads in a guest.
type GuestFacts struct {
	Hostname string
	// Addrs are the guest's local IPv4 addresses (loopback excluded).
	Addrs []netip.Addr
	// Time is the guest's realtime clock, read between Sent and Received
	// (host times).
	Time           time.Time
	Sent, Received time.Time
	// Random is 16 bytes of the guest's /dev/urandom, hex.
	Random string
}

// probeScript prints, separated by "--" lines: the host name, the
// realtime clock (seconds.nanoseconds), 16 bytes of /dev/urandom in hex,
// and /proc/net/fib_trie (which lists local addresses without needing
// iproute2 in the guest).
const probeScript = `cat /proc/sys/kernel/hostname; echo --; date +%s.%N; echo --; ` +
	`head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; echo --; cat /proc/net/fib_trie`

// probeGuest runs probeScript through the agent.
func probeGuest(ctx context.Context, c *agent.Client, _ string) (GuestFacts, error) {
	sent := time.Now()
	p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"/bin/sh", "-c", probeScript}})
	if err != nil {
		return GuestFacts{}, err
	}
	defer p.Close()
	errc := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(p.Stderr, 4096))
		errc <- b
	}()
	out, err := io.ReadAll(io.LimitReader(p.Stdout, 1<<20))
	if err != nil {
		return GuestFacts{}, err
	}
	stderr := <-errc
	st, err := p.Wait()
	if err != nil {
		return GuestFacts{}, err
	}
	if st.Code != 0 || st.Signal != 0 {
		return GuestFacts{}, fmt.Errorf("probe exited %d: %s", st.Code, strings.TrimSpace(string(stderr)))
	}
	f, err := parseProbe(string(out))
	f.Sent, f.Received = sent, time.Now()
	return f, err
}

// parseProbe parses probeScript's output.
func parseProbe(out string) (GuestFacts, error) {
	parts := strings.SplitN(out, "--\n", 4)
	if len(parts) != 4 {
		return GuestFacts{}, fmt.Errorf("probe: %d sections, want 4: %.200q", len(parts), out)
	}
	var f GuestFacts
	f.Hostname = strings.TrimSpace(parts[0])
	sec, nsec, _ := strings.Cut(strings.TrimSpace(parts[1]), ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return f, fmt.Errorf("probe: guest time %q: %w", parts[1], err)
	}
	var ns int64
	if nsec != "" {
		// Busybox date prints a literal "N"; then only seconds are known.
		nsec = (nsec + "000000000")[:9]
		ns, _ = strconv.ParseInt(nsec, 10, 64)
	}
	f.Time = time.Unix(s, ns)
	f.Random = strings.TrimSpace(parts[2])
	if _, err := hex.DecodeString(f.Random); err != nil || len(f.Random) != 32 {
		return f, fmt.Errorf("probe: urandom sample %q: want 32 hex digits", f.Random)
	}
	f.Addrs = fibLocal(parts[3])
	return f, nil
}

// fibLocal returns the local, non-loopback addresses in /proc/net/fib_trie:
// each "|-- ADDR" line followed by a "/32 host LOCAL" line.
func fibLocal(trie string) []netip.Addr {
	var out []netip.Addr
	var last netip.Addr
	sc := bufio.NewScanner(strings.NewReader(trie))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if a, ok := strings.CutPrefix(l, "|-- "); ok {
			last, _ = netip.ParseAddr(a)
			continue
		}
		if strings.Contains(l, "/32 host LOCAL") && last.IsValid() && !last.IsLoopback() {
			if !containsAddr(out, last) {
				out = append(out, last)
			}
		}
	}
	return out
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, b := range as {
		if a == b {
			return true
		}
	}
	return false
}

// fixup tells a restored guest who it is now: the host's time, fresh
// entropy, and (if it differs from the snapshot's) its network identity
// and host name. The fork's own monitor resets vsock on restore, so c is a
// connection made after it.
func (d *Daemon) fixup(ctx context.Context, c *agent.Client, vm store.VM, identity bool) error {
	if err := c.SetClock(ctx, time.Now()); err != nil {
		return fmt.Errorf("set clock: %w", err)
	}
	seed := make([]byte, 64)
	rand.Read(seed)
	if err := c.Reseed(ctx, seed); err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	if !identity {
		return nil
	}
	nc := agent.NetworkConfig{Hostname: vm.Name}
	if l := vm.Lease; l != nil {
		nc.MAC, nc.Address, nc.Gateway = l.MAC, l.Address.String(), l.Gateway.String()
		for _, a := range l.DNS {
			nc.DNS = append(nc.DNS, a.String())
		}
	}
	if err := c.SetNetwork(ctx, nc); err != nil {
		return fmt.Errorf("set network: %w", err)
	}
	return nil
}

// errCheck is a verification that failed: the child is not handed out.
var errCheck = errors.New("fork check failed")

// verify checks a child's facts against what it was given: its host name,
// its address, and a clock close to the host's.
func (d *Daemon) verify(vm store.VM, f GuestFacts) error {
	var fails []string
	if f.Hostname != vm.Name {
		fails = append(fails, fmt.Sprintf("host name is %q, want %q", f.Hostname, vm.Name))
	}
	if l := vm.Lease; l != nil && !containsAddr(f.Addrs, l.Address.Addr()) {
		fails = append(fails, fmt.Sprintf("addresses are %v, want %v among them", f.Addrs, l.Address.Addr()))
	}
	// The guest read its clock between Sent and Received.
	lo, hi := f.Sent.Add(-d.cfg.ClockSkew), f.Received.Add(d.cfg.ClockSkew)
	if f.Time.Before(lo) || f.Time.After(hi) {
		fails = append(fails, fmt.Sprintf("clock is %s, host's %s (more than %v apart)",
			f.Time.UTC().Format(time.RFC3339Nano), f.Sent.UTC().Format(time.RFC3339Nano), d.cfg.ClockSkew))
	}
	if len(fails) > 0 {
		return fmt.Errorf("%w: %s", errCheck, strings.Join(fails, "; "))
	}
	return nil
}
