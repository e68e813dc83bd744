package image

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func printPath(t *testing.T, env ...string) string {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	cmd := exec.Command("bash", "build.sh", "--print-path")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build.sh --print-path: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestPathNotBuilt(t *testing.T) {
	t.Setenv("BOXD_CACHE", t.TempDir())
	if p, err := Path(); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Path() = %q, %v; want ErrNotBuilt in an empty cache", p, err)
	}
}

// TestCacheKeyFollowsInputs checks that each input of the image moves its
// cache path, and that the package list's order does not.
func TestCacheKeyFollowsInputs(t *testing.T) {
	cache := t.TempDir()
	base := printPath(t, "BOXD_CACHE="+cache)
	if again := printPath(t, "BOXD_CACHE="+cache); again != base {
		t.Errorf("same inputs, different paths: %q, %q", base, again)
	}
	if !strings.HasPrefix(base, filepath.Join(cache, "image")+"/") || filepath.Base(base) != "rootfs.ext4" {
		t.Errorf("path %q is not <BOXD_CACHE>/image/<key>/rootfs.ext4", base)
	}
	for _, env := range []string{"BOXD_IMAGE_SIZE=4G", "BOXD_IMAGE_PACKAGES=bash,git"} {
		if p := printPath(t, "BOXD_CACHE="+cache, env); p == base {
			t.Errorf("%s maps to the default path %q", env, p)
		}
	}
	a := printPath(t, "BOXD_CACHE="+cache, "BOXD_IMAGE_PACKAGES=git,bash")
	b := printPath(t, "BOXD_CACHE="+cache, "BOXD_IMAGE_PACKAGES=bash,git,bash")
	if a != b {
		t.Errorf("package order or repetition changed the key: %q vs %q", a, b)
	}
}

func TestRejectsBadInputs(t *testing.T) {
	for _, env := range []string{"BOXD_IMAGE_SIZE=huge", "BOXD_IMAGE_PACKAGES=bash;rm -rf /"} {
		cmd := exec.Command("bash", "build.sh", "--print-path")
		cmd.Env = append(os.Environ(), "BOXD_CACHE="+t.TempDir(), env)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("%s accepted: %s", env, out)
		}
	}
}

// TestBuiltImage checks the cached image when `make image` has run: an ext4
// filesystem holding the Debian tree and boxd's marker.
func TestBuiltImage(t *testing.T) {
	p, err := Path()
	if errors.Is(err, ErrNotBuilt) {
		t.Skip("root image not built (make image)")
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 2)
	if _, err := f.ReadAt(sb, 1024+0x38); err != nil {
		t.Fatal(err)
	}
	if magic := binary.LittleEndian.Uint16(sb); magic != 0xef53 {
		t.Fatalf("superblock magic %#x, want ext4's 0xef53", magic)
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skip("debugfs (e2fsprogs) not installed")
	}
	for file, want := range map[string]string{"/etc/boxd-image": "boxd root image", "/etc/debian_version": "12."} {
		out, err := exec.Command("debugfs", "-R", "cat "+file, p).Output()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("%s in the image: %q, %v; want %q", file, out, err, want)
		}
	}
}
