package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/boxd-dev/boxd/host/daemon"
)

// ErrExhausted is returned by Attach when every address of the subnet is
// leased.
var ErrExhausted = errors.New("network: no free address in the subnet")

// pool hands out the subnet's host addresses. It never hands out the
// network address, the gateway or the broadcast address, and it allocates
// round-robin from a cursor so that a freed address is reused as late as
// possible: stale neighbour and conntrack entries for it have long expired
// by then.
//
// A pool is not safe for concurrent use; the Manager's lock guards it.
type pool struct {
	subnet  netip.Prefix
	gateway netip.Addr
	last    netip.Addr // broadcast
	next    netip.Addr
	used    map[netip.Addr]string // address → VM ID
}

func newPool(subnet netip.Prefix) *pool {
	gw := subnet.Addr().Next()
	return &pool{
		subnet:  subnet,
		gateway: gw,
		last:    broadcast(subnet),
		next:    gw.Next(),
		used:    make(map[netip.Addr]string),
	}
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// usable reports whether a is an address a guest may hold.
func (p *pool) usable(a netip.Addr) bool {
	return p.subnet.Contains(a) && a != p.subnet.Addr() && a != p.gateway && a != p.last
}

// take marks a as leased to vm; it fails if a is not usable or is held by
// another VM.
func (p *pool) take(a netip.Addr, vm string) error {
	if !p.usable(a) {
		return fmt.Errorf("network: address %s is not a guest address of %s", a, p.subnet)
	}
	if owner, ok := p.used[a]; ok && owner != vm {
		return fmt.Errorf("network: address %s leased to both %s and %s", a, owner, vm)
	}
	p.used[a] = vm
	return nil
}

// alloc leases the next free address to vm.
func (p *pool) alloc(vm string) (netip.Addr, error) {
	a := p.next
	for range 1 << (32 - p.subnet.Bits()) {
		if !p.usable(a) {
			a = p.gateway.Next()
		}
		if _, ok := p.used[a]; !ok {
			p.used[a] = vm
			p.next = a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, ErrExhausted
}

func (p *pool) free(a netip.Addr) { delete(p.used, a) }

// mac derives a guest's MAC from its address: locally administered,
// unicast, "02:62:78" ("bx") and the address's low three bytes, so MACs
// on the bridge are unique exactly when addresses are.
func mac(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 'b', 'x', b[1], b[2], b[3]}
}

// record is the Manager's own state file: what it created, so a new
// Manager can clean up what the daemon no longer holds, and the cursor.
type record struct {
	Version int            `json:"version"`
	Next    netip.Addr     `json:"next"`
	Leases  []daemon.Lease `json:"leases"`
}

const recordVersion = 1

func recordPath(dir string) string { return filepath.Join(dir, "network.json") }

// loadRecord reads the state file. A missing file is an empty record, and
// so is an unreadable one: the record only holds hints (what to clean up,
// where the cursor was), the daemon's leases are authoritative, and the
// bridge's ports are scanned anyway, so losing it costs nothing that
// refusing to start would save.
func loadRecord(dir string) record {
	var r record
	b, err := os.ReadFile(recordPath(dir))
	if err != nil || json.Unmarshal(b, &r) != nil || r.Version != recordVersion {
		return record{Version: recordVersion}
	}
	return r
}

// saveRecord replaces the state file by rename, so a reader sees the old
// record or the new one. It does not fsync: the record is a hint (see
// loadRecord), and Attach is on the path of every VM's boot.
func saveRecord(dir string, r record) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("network: encode record: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "network.json.*")
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("network: write record: %w", err)
	}
	if err := os.Rename(tmp.Name(), recordPath(dir)); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}
