package network

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseResolvConf(t *testing.T) {
	conf := `# comment
search example.com
nameserver 127.0.0.53
nameserver   10.88.0.1
options edns0
nameserver fe80::1%eth0
nameserver ::ffff:192.0.2.1
nameserver not-an-address
nameserver 192.0.2.9
`
	got := parseResolvConf(strings.NewReader(conf), DefaultSubnet)
	want := []string{"127.0.0.53:53", "[fe80::1%eth0]:53", "192.0.2.1:53"}
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}
	if got := parseResolvConf(strings.NewReader(""), netip.Prefix{}); got == nil || len(got) != 0 {
		t.Errorf("empty resolv.conf: %v, want an empty, non-nil list", got)
	}
}

func TestIsReply(t *testing.T) {
	q := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	tests := []struct {
		name string
		r    []byte
		want bool
	}{
		{"answer", []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0}, true},
		{"other ID", []byte{0x12, 0x35, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, false},
		{"a query", []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}, false},
		{"short", []byte{0x12, 0x34, 0x81}, false},
	}
	for _, tt := range tests {
		if got := isReply(q, tt.r); got != tt.want {
			t.Errorf("%s: isReply = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzIsReply: the only parse of a guest's or an upstream's bytes.
func FuzzIsReply(f *testing.F) {
	f.Add([]byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}, []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{}, []byte{0xff})
	f.Fuzz(func(t *testing.T, q, r []byte) {
		if isReply(q, r) && (len(r) < dnsHeaderLen || r[0] != q[0] || r[1] != q[1]) {
			t.Fatalf("isReply accepted %x for %x", r, q)
		}
	})
}
