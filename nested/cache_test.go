package nested

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCacheDir(t *testing.T) {
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skipf("no home directory: %v", err)
	}
	tests := []struct {
		name, boxd, xdg, want string
	}{
		{"BOXD_CACHE wins", "/var/cache/boxd-ci", "/xdg", "/var/cache/boxd-ci"},
		{"XDG", "", "/xdg", "/xdg/boxd"},
		{"relative XDG ignored", "", "xdg", filepath.Join(home, ".cache", "boxd")},
		{"home", "", "", filepath.Join(home, ".cache", "boxd")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvCache, tc.boxd)
			t.Setenv("XDG_CACHE_HOME", tc.xdg)
			got, err := CacheDir()
			if err != nil || got != tc.want {
				t.Errorf("CacheDir = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestInitramfsKey(t *testing.T) {
	base, _ := fakeInitramfs(t)
	baseKey, err := base.key("6.1.0-57-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := base.key("6.1.0-57-amd64"); err != nil || again != baseKey {
		t.Fatalf("key is not stable: %s then %s (%v)", baseKey, again, err)
	}
	changes := map[string]func(t *testing.T, ir *initramfs) string{
		"kernel version": func(t *testing.T, ir *initramfs) string { return "6.1.0-58-amd64" },
		"init script": func(t *testing.T, ir *initramfs) string {
			ir.init = append([]byte(nil), "#!/bin/busybox sh\necho bye\n"...)
			return "6.1.0-57-amd64"
		},
		"busybox contents": func(t *testing.T, ir *initramfs) string {
			mustWrite(t, ir.busybox, "busybox bytes, newer")
			return "6.1.0-57-amd64"
		},
		"module contents": func(t *testing.T, ir *initramfs) string {
			f, err := os.OpenFile(ir.modules[1].Path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString("x"); err != nil {
				t.Fatal(err)
			}
			return "6.1.0-57-amd64"
		},
		"module order": func(t *testing.T, ir *initramfs) string {
			ir.modules[0], ir.modules[1] = ir.modules[1], ir.modules[0]
			return "6.1.0-57-amd64"
		},
		"module dropped": func(t *testing.T, ir *initramfs) string {
			ir.modules = ir.modules[1:]
			return "6.1.0-57-amd64"
		},
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			ir, _ := fakeInitramfs(t)
			if k, err := ir.key("6.1.0-57-amd64"); err != nil || k != baseKey {
				t.Fatalf("fresh fake has key %s (%v); want %s", k, err, baseKey)
			}
			ver := change(t, &ir)
			k, err := ir.key(ver)
			if err != nil {
				t.Fatal(err)
			}
			if k == baseKey {
				t.Errorf("changing the %s did not change the key", name)
			}
		})
	}
}

func TestEnsureInitramfs(t *testing.T) {
	ir, _ := fakeInitramfs(t)
	cache := t.TempDir()
	path, built, err := ensureInitramfs(cache, "6.1.0-57-amd64", ir)
	if err != nil || !built {
		t.Fatalf("first ensureInitramfs = %s, built %v, %v; want a fresh build", path, built, err)
	}
	if !strings.HasPrefix(path, filepath.Join(cache, "nested", "initramfs-6.1.0-57-amd64-")) {
		t.Errorf("path %s is not under the cache", path)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	again, built, err := ensureInitramfs(cache, "6.1.0-57-amd64", ir)
	if err != nil || built || again != path {
		t.Errorf("second ensureInitramfs = %s, built %v, %v; want the cached %s", again, built, err, path)
	}
	ir.init = []byte("#!/bin/busybox sh\necho changed\n")
	changed, built, err := ensureInitramfs(cache, "6.1.0-57-amd64", ir)
	if err != nil || !built || changed == path {
		t.Errorf("after an init change: %s, built %v, %v; want a new build", changed, built, err)
	}
	// The old archive is untouched and no temporary file is left behind.
	if now, err := os.ReadFile(path); err != nil || string(now) != string(first) {
		t.Errorf("cached archive changed or vanished: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(cache, "nested"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left in the cache", e.Name())
		}
	}
	if len(entries) != 2 {
		t.Errorf("cache holds %d files; want 2", len(entries))
	}
}

func TestWriteFileAtomicFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out")
	mustWrite(t, path, "old")
	err := writeFileAtomic(path, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return os.ErrClosed
	})
	if err == nil {
		t.Fatal("writeFileAtomic succeeded although fill failed")
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("file holds %q after a failed write; want the old contents", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries; want only the old file", len(entries))
	}
}
