package network

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/google/go-cmp/cmp"
)

func TestPool(t *testing.T) {
	steps := []struct {
		op   string // "alloc ID", "free ADDR", "take ADDR ID"
		want string // address allocated, or error substring
	}{
		{"alloc a", "10.0.0.2"},
		{"alloc b", "10.0.0.3"},
		{"alloc c", "10.0.0.4"},
		{"alloc d", "10.0.0.5"},
		{"alloc e", "10.0.0.6"},
		{"alloc f", "no free address"}, // /29: .2-.6, .1 gateway, .7 broadcast
		{"free 10.0.0.3", ""},
		{"alloc g", "10.0.0.3"}, // wraps around to the only free address
		{"free 10.0.0.2", ""},
		{"free 10.0.0.5", ""},
		{"alloc h", "10.0.0.5"}, // round-robin: after .3, not the lower .2
		{"alloc i", "10.0.0.2"},
		{"take 10.0.0.1 x", "not a guest address"},
		{"take 10.0.0.7 x", "not a guest address"},
		{"take 10.0.1.2 x", "not a guest address"},
		{"take 10.0.0.2 x", "leased to both"},
		{"take 10.0.0.2 i", ""},
	}
	p := newPool(netip.MustParsePrefix("10.0.0.0/29"))
	for _, s := range steps {
		f := strings.Fields(s.op)
		var got string
		switch f[0] {
		case "alloc":
			a, err := p.alloc(f[1])
			got = a.String()
			if err != nil {
				got = err.Error()
			}
		case "free":
			p.free(netip.MustParseAddr(f[1]))
		case "take":
			if err := p.take(netip.MustParseAddr(f[1]), f[2]); err != nil {
				got = err.Error()
			}
		}
		if !strings.Contains(got, s.want) || (s.want == "" && got != "") {
			t.Errorf("%s: got %q, want %q", s.op, got, s.want)
		}
	}
	if _, err := p.alloc("z"); !errors.Is(err, ErrExhausted) {
		t.Errorf("alloc on a full pool: %v, want ErrExhausted", err)
	}
}

func TestMAC(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"10.88.0.2", "02:62:78:58:00:02"},
		{"10.88.255.254", "02:62:78:58:ff:fe"},
		{"192.168.1.9", "02:62:78:a8:01:09"},
	}
	for _, tt := range tests {
		if got := mac(netip.MustParseAddr(tt.addr)).String(); got != tt.want {
			t.Errorf("mac(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if empty := loadRecord(dir); len(empty.Leases) != 0 || empty.Next.IsValid() {
		t.Fatalf("missing record: %+v, want empty", empty)
	}
	want := record{
		Version: recordVersion,
		Next:    netip.MustParseAddr("10.88.0.9"),
		Leases: []daemon.Lease{{
			VMID: "0123456789ab", TAP: "bx0123456789ab", MAC: "02:62:78:58:00:08",
			Address: netip.MustParsePrefix("10.88.0.8/16"), Gateway: netip.MustParseAddr("10.88.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("10.88.0.1")},
		}},
	}
	if err := saveRecord(dir, want); err != nil {
		t.Fatal(err)
	}
	got := loadRecord(dir)
	eq := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	eqp := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	if diff := cmp.Diff(want, got, eq, eqp); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	// A damaged record is an empty one, not a reason to refuse to start.
	if err := os.WriteFile(recordPath(dir), []byte("{\"version\": 1, \"leas"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := loadRecord(dir); len(got.Leases) != 0 {
		t.Errorf("damaged record read as %+v", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		err  string
	}{
		{"defaults", Config{StateDir: "/x"}, ""},
		{"no state dir", Config{}, "no state directory"},
		{"long bridge", Config{StateDir: "/x", Bridge: "a-very-long-bridge"}, "longer than 15"},
		{"ipv6", Config{StateDir: "/x", Subnet: netip.MustParsePrefix("fd00::/64")}, "want IPv4"},
		{"too small", Config{StateDir: "/x", Subnet: netip.MustParsePrefix("10.0.0.0/30")}, "want IPv4"},
		{"port 0", Config{StateDir: "/x", GuestTCPPorts: []uint16{0}}, "port 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.cfg.withDefaults()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Bridge != DefaultBridge || c.Subnet != DefaultSubnet || c.ResolvConf != DefaultResolvConf {
				t.Errorf("defaults not applied: %+v", c)
			}
		})
	}
}

func TestCheckVMID(t *testing.T) {
	for id, ok := range map[string]bool{
		"0123456789ab": true, "0123456789AB": false, "0123456789a": false,
		"0123456789abc": false, "../../etc/xx": false, "": false,
	} {
		if err := checkVMID(id); (err == nil) != ok {
			t.Errorf("checkVMID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}
