package cli

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDisk(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want diskSpec
		err  string
	}{
		{in: "/d.img", want: diskSpec{Path: "/d.img"}},
		{in: "/d.img,ro", want: diskSpec{Path: "/d.img", ReadOnly: true}},
		{in: "/d.img,id=root,ro", want: diskSpec{Path: "/d.img", ReadOnly: true, ID: "root"}},
		{in: "", err: "missing path"},
		{in: ",ro", err: "missing path"},
		{in: "/d.img,rw", err: `unknown option "rw"`},
		{in: "/d.img,id=" + strings.Repeat("x", 21), err: "longer than 20"},
	} {
		got, err := parseDisk(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseDisk(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseDisk(%q): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("parseDisk(%q) (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestParseNet(t *testing.T) {
	got, err := parseNet("tap=tap0,mac=02:00:00:00:00:01,mtu=9000")
	if err != nil || got.TAP != "tap0" || got.MAC.String() != "02:00:00:00:00:01" || got.MTU != 9000 {
		t.Errorf("parseNet = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "tap=", "mac=02:00:00:00:00:01", "tap=t,mac=zz", "tap=t,mtu=10", "tap=t,x=1", "tap=abcdefghijklmnop"} {
		if _, err := parseNet(bad); err == nil {
			t.Errorf("parseNet(%q) succeeded", bad)
		}
	}
}

func TestParseVsock(t *testing.T) {
	got, err := parseVsock("cid=3,path=/run/v.sock")
	if err != nil || got != (vsockSpec{CID: 3, Path: "/run/v.sock"}) {
		t.Errorf("parseVsock = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "cid=2,path=/x", "cid=3", "path=/x", "cid=4294967295,path=/x", "cid=x,path=/x", "cid=3,path=/x,y=1"} {
		if _, err := parseVsock(bad); err == nil {
			t.Errorf("parseVsock(%q) succeeded", bad)
		}
	}
}
