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
