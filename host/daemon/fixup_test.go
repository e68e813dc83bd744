package daemon

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseProbe(t *testing.T) {
	out, err := os.ReadFile("testdata/probe.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseProbe(string(out))
	if err != nil {
		t.Fatal(err)
	}
	want := GuestFacts{
		Hostname: "task-1",
		Addrs:    []netip.Addr{netip.MustParseAddr("10.88.0.2")},
		Time:     time.Unix(1764412800, 123456789),
		Random:   "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("parseProbe (-want +got):\n%s", d)
	}
	for _, bad := range []string{
		"",
		"h\n--\nnot-a-time\n--\n00\n--\n",
		strings.Replace(string(out), "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "xyz", 1),
	} {
		if _, err := parseProbe(bad); err == nil {
			t.Errorf("parseProbe(%.40q) accepted", bad)
		}
	}
}

func FuzzParseProbe(f *testing.F) {
	out, _ := os.ReadFile("testdata/probe.txt")
	f.Add(string(out))
	f.Add("--\n--\n--\n")
	f.Fuzz(func(t *testing.T, s string) {
		parseProbe(s) // guest output: never a panic
	})
}
