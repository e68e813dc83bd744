package cmdline

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		in   string
		want []Arg
	}{
		{"", nil},
		{"  \n", nil},
		{"console=ttyS0 quiet\n", []Arg{{"console", "ttyS0", true}, {Key: "quiet"}}},
		{"a= b", []Arg{{"a", "", true}, {Key: "b"}}},
		{"a=b=c", []Arg{{"a", "b=c", true}}},
		{`a="x y" b`, []Arg{{"a", "x y", true}, {Key: "b"}}},
		{`"a=x y" b`, []Arg{{"a", "x y", true}, {Key: "b"}}},
		{`"flag with space"`, []Arg{{Key: "flag with space"}}},
		{`a="unterminated b=c`, []Arg{{"a", "unterminated b=c", true}}},
		{"x=1 -- boxd.ip=10.0.0.2/24", []Arg{{"x", "1", true}}},
		{"x=--", []Arg{{"x", "--", true}}},
		{"\ta\t\tb", []Arg{{Key: "a"}, {Key: "b"}}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, Split(tt.in)); diff != "" {
			t.Errorf("Split(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParse(t *testing.T) {
	def := Default()
	with := func(f func(*Config)) Config {
		c := Default()
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		in      string
		want    Config
		wantErr string // substring; "" means no error
	}{
		{name: "empty", in: "", want: def},
		{name: "kernel keys ignored", in: "console=ttyS0 reboot=k panic=-1 ip=dhcp", want: def},
		{
			name: "everything",
			in: "console=ttyS0 boxd.ip=10.0.0.2/24 boxd.gw=10.0.0.1 boxd.dns=10.0.0.1,2001:db8::1 " +
				"boxd.hostname=task-1 boxd.seed=00ff10 boxd.time=1700000000123456789 boxd.root=/dev/vda " +
				"boxd.rootfstype=xfs boxd.agent_port=2048 boxd.test_poweroff=1",
			want: Config{
				Address:      netip.MustParsePrefix("10.0.0.2/24"),
				Gateway:      netip.MustParseAddr("10.0.0.1"),
				DNS:          []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")},
				Hostname:     "task-1",
				Seed:         []byte{0, 0xff, 0x10},
				Time:         time.Unix(0, 1700000000123456789).UTC(),
				Root:         "/dev/vda",
				RootFSType:   "xfs",
				AgentPort:    2048,
				TestPoweroff: true,
			},
		},
		{name: "kernel quiet", in: "console=ttyS0 quiet", want: with(func(c *Config) { c.Quiet = true })},
		{name: "quiet with a value is not the flag", in: "quiet=0", want: def},
		{name: "verbose", in: "quiet boxd.verbose", want: with(func(c *Config) { c.Quiet, c.Verbose = true, true })},
		{name: "verbose value", in: "boxd.verbose=2", want: def, wantErr: "0 or 1"},
		{name: "flag form", in: "boxd.test_poweroff", want: with(func(c *Config) { c.TestPoweroff = true })},
		{name: "last wins", in: "boxd.hostname=a boxd.hostname=b", want: with(func(c *Config) { c.Hostname = "b" })},
		{name: "ipv6 address", in: "boxd.ip=fd00::2/64", want: with(func(c *Config) { c.Address = netip.MustParsePrefix("fd00::2/64") })},
		{name: "quoted value", in: `boxd.hostname="vm1"`, want: with(func(c *Config) { c.Hostname = "vm1" })},
		{name: "after -- is init's", in: "-- boxd.hostname=x", want: def},
		{
			name:    "bad keys leave the good ones",
			in:      "boxd.ip=10.0.0.2 boxd.gw=10.0.0.1 boxd.hostname=a_b",
			want:    with(func(c *Config) { c.Gateway = netip.MustParseAddr("10.0.0.1") }),
			wantErr: "boxd.ip",
		},
		{name: "unknown key", in: "boxd.colour=red", want: def, wantErr: "unknown key"},
		{name: "missing value", in: "boxd.ip", want: def, wantErr: "missing =value"},
		{name: "bad dns", in: "boxd.dns=1.1.1.1,nope", want: def, wantErr: "boxd.dns"},
		{name: "too many dns", in: "boxd.dns=1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5", want: def, wantErr: "at most"},
		{name: "zone", in: "boxd.gw=fe80::1%eth0", want: def, wantErr: "zones"},
		{name: "odd hex", in: "boxd.seed=abc", want: def, wantErr: "boxd.seed"},
		{name: "empty seed", in: "boxd.seed=", want: def, wantErr: "empty"},
		{name: "long seed", in: "boxd.seed=" + strings.Repeat("00", MaxSeed+1), want: def, wantErr: "longer"},
		{name: "max seed", in: "boxd.seed=" + strings.Repeat("ab", MaxSeed), want: with(func(c *Config) { c.Seed = []byte(strings.Repeat("\xab", MaxSeed)) })},
		{name: "negative time", in: "boxd.time=-5", want: def, wantErr: "1970"},
		{name: "root outside dev", in: "boxd.root=/etc/passwd", want: def, wantErr: "device path"},
		{name: "root dotdot", in: "boxd.root=/dev/../etc/shadow", want: def, wantErr: "device path"},
		{name: "root bare dev", in: "boxd.root=/dev/", want: def, wantErr: "device path"},
		{name: "port zero", in: "boxd.agent_port=0", want: def, wantErr: "port"},
		{name: "port any", in: "boxd.agent_port=4294967295", want: def, wantErr: "port"},
		{name: "fstype", in: "boxd.rootfstype=Ext4;", want: def, wantErr: "filesystem"},
		{name: "poweroff value", in: "boxd.test_poweroff=yes", want: def, wantErr: "0 or 1"},
		{name: "long hostname", in: "boxd.hostname=" + strings.Repeat("h", 65), want: def, wantErr: "1..64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLogSteps(t *testing.T) {
	for in, want := range map[string]bool{"": true, "quiet": false, "quiet boxd.verbose=1": true, "boxd.verbose=0 quiet": false} {
		c, err := Parse(in)
		if err != nil || c.LogSteps() != want {
			t.Errorf("Parse(%q).LogSteps() = %v (%v), want %v", in, c.LogSteps(), err, want)
		}
	}
}

func TestArgsRoundTrip(t *testing.T) {
	c, err := Parse("boxd.ip=10.0.0.2/24 boxd.gw=10.0.0.1 boxd.dns=1.1.1.1 boxd.hostname=h boxd.seed=0102 " +
		"boxd.time=1 boxd.root=/dev/vda boxd.agent_port=5 boxd.test_poweroff=1")
	if err != nil {
		t.Fatal(err)
	}
	want := "boxd.ip=10.0.0.2/24 boxd.gw=10.0.0.1 boxd.dns=1.1.1.1 boxd.hostname=h boxd.seed=0102 " +
		"boxd.time=1 boxd.root=/dev/vda boxd.agent_port=5 boxd.test_poweroff=1"
	if got := c.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := Default().String(); got != "" {
		t.Errorf("Default().String() = %q, want empty (defaults are implied)", got)
	}
}

// FuzzParseCmdline checks that Parse survives any input and that whatever it
// accepts renders back to a command line that parses to the same Config.
func FuzzParseCmdline(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.cmdline")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(`boxd.ip="10.0.0.2/24" "boxd.gw=10.0.0.1" boxd.seed=`)
	f.Add("boxd.dns=,, boxd.time=99999999999999999999 boxd.agent_port=-1")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(in)
		again, err2 := Parse(c.String())
		if err2 != nil {
			t.Fatalf("Parse(%q) gave %+v, which renders as %q and fails: %v", in, c, c.String(), err2)
		}
		if err == nil && c.String() != again.String() {
			t.Fatalf("round trip of %q: %q became %q", in, c.String(), again.String())
		}
		if len(c.Seed) > MaxSeed || len(c.DNS) > MaxDNS || len(c.Hostname) > MaxHostname {
			t.Fatalf("bounds exceeded: %+v", c)
		}
	})
}
