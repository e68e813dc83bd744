package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--init is required"},
		{[]string{"--init", "x", "extra"}, "unexpected arguments"},
		{[]string{"--init", "/nonexistent"}, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tt.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and %q", tt.args, code, stderr.String(), tt.want)
		}
	}
}

func TestRejectsDynamicBinary(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--init", sh, "--busybox", "", "--cache", t.TempDir()}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "dynamically linked") {
		t.Errorf("exit %d, stderr %q; want a dynamic-binary error", code, stderr.String())
	}
}

// TestBuildsAndCaches uses the static busybox as a stand-in for every binary.
func TestBuildsAndCaches(t *testing.T) {
	const bb = "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Skip("no static busybox (apt-get install busybox-static)")
	}
	cache := t.TempDir()
	args := []string{"--init", bb, "--boxd", bb, "--busybox", bb, "--cache", cache, "--gzip"}
	var out1, err1, out2, err2 bytes.Buffer
	if code := run(args, &out1, &err1); code != 0 {
		t.Fatalf("first run: %d: %s", code, err1.String())
	}
	if code := run(args, &out2, &err2); code != 0 {
		t.Fatalf("second run: %d: %s", code, err2.String())
	}
	p := strings.TrimSpace(out1.String())
	if !strings.HasPrefix(p, cache+"/initramfs/") || !strings.HasSuffix(p, ".cpio.gz") || out2.String() != out1.String() {
		t.Errorf("paths %q and %q, want one archive under %s", out1.String(), out2.String(), cache)
	}
	if !strings.Contains(err1.String(), "built in") || !strings.Contains(err2.String(), "cached") {
		t.Errorf("progress lines %q, %q", err1.String(), err2.String())
	}
}
