package nested

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCompareVersions(t *testing.T) {
	// Each list is in ascending order.
	ordered := [][]string{
		{"6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-57-amd64", "6.12.0-1-amd64"},
		{"5.10.0-28-amd64", "6.1.0-0.deb11.13-amd64", "6.1.0-1-amd64"},
		{"6.1", "6.1.0", "6.1.0-1"},
		{"4.19.0-1-amd64", "4.19.0-1-cloud-amd64"},
		{"6.01", "6.2"},
	}
	for _, want := range ordered {
		got := append([]string(nil), want...)
		for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
			got[i], got[j] = got[j], got[i]
		}
		sort.Slice(got, func(i, j int) bool { return compareVersions(got[i], got[j]) < 0 })
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("sorted versions (-want +got):\n%s", diff)
		}
	}
	if c := compareVersions("6.1.0-57-amd64", "6.1.0-57-amd64"); c != 0 {
		t.Errorf("compareVersions(equal) = %d", c)
	}
}

// fakeKernelTree creates boot/vmlinuz-V for every version and
// modules/V/modules.dep for those in withModules.
func fakeKernelTree(t *testing.T, versions []string, withModules ...string) (boot, modules string) {
	t.Helper()
	root := t.TempDir()
	boot, modules = filepath.Join(root, "boot"), filepath.Join(root, "lib", "modules")
	mustMkdir(t, boot)
	for _, v := range versions {
		mustWrite(t, filepath.Join(boot, "vmlinuz-"+v), "kernel "+v)
		mustWrite(t, filepath.Join(boot, "config-"+v), "")
	}
	for _, v := range withModules {
		mustMkdir(t, filepath.Join(modules, v))
		mustWrite(t, filepath.Join(modules, v, "modules.dep"), "")
	}
	return boot, modules
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	mustMkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindKernel(t *testing.T) {
	tests := []struct {
		name        string
		versions    []string
		withModules []string
		want        string // version, or "" for a MissingError
		errHas      string
	}{
		{"newest by version order", []string{"6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-10-amd64"},
			[]string{"6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-10-amd64"}, "6.1.0-57-amd64", ""},
		{"skips kernel without modules", []string{"6.1.0-9-amd64", "6.1.0-57-amd64"},
			[]string{"6.1.0-9-amd64"}, "6.1.0-9-amd64", ""},
		{"no kernel", nil, nil, "", "linux-image-amd64"},
		{"no modules", []string{"6.1.0-57-amd64"}, nil, "", "modules of kernel 6.1.0-57-amd64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			boot, modules := fakeKernelTree(t, tc.versions, tc.withModules...)
			k, err := FindKernel(boot, modules)
			if tc.want == "" {
				var me *MissingError
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), InstallCommand) {
					t.Fatalf("FindKernel err = %v; want a MissingError naming %q and the install command", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Kernel{
				Version:    tc.want,
				Image:      filepath.Join(boot, "vmlinuz-"+tc.want),
				ModulesDir: filepath.Join(modules, tc.want),
			}
			if diff := cmp.Diff(want, k); diff != "" {
				t.Errorf("FindKernel (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFindKernelHost(t *testing.T) {
	k, err := FindKernel("/boot", "/lib/modules")
	if err != nil {
		t.Skipf("no installed kernel here: %v", err)
	}
	if _, err := os.Stat(k.Image); err != nil {
		t.Errorf("kernel image: %v", err)
	}
	if !strings.HasSuffix(k.Image, "vmlinuz-"+k.Version) {
		t.Errorf("image %s does not match version %s", k.Image, k.Version)
	}
}

func TestFindBusybox(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "busybox")
	mustWrite(t, notELF, "#!/bin/sh\n")
	if _, err := findBusybox(filepath.Join(dir, "missing")); !errors.As(err, new(*MissingError)) {
		t.Errorf("findBusybox(missing) err = %v; want a MissingError", err)
	}
	if _, err := findBusybox(notELF); err == nil || errors.As(err, new(*MissingError)) {
		t.Errorf("findBusybox(not ELF) err = %v; want a format error", err)
	}
	if static, err := isStaticELF("/bin/busybox"); err == nil && static {
		if got, err := findBusybox(filepath.Join(dir, "missing"), "/bin/busybox"); err != nil || got != "/bin/busybox" {
			t.Errorf("findBusybox = %q, %v; want /bin/busybox", got, err)
		}
	}
	// A dynamically linked binary must be refused: the initramfs has no libc.
	if static, err := isStaticELF("/bin/sh"); err == nil && static {
		t.Skip("/bin/sh is static here")
	} else if err == nil {
		if _, err := findBusybox("/bin/sh"); !errors.As(err, new(*MissingError)) {
			t.Errorf("findBusybox(dynamic) err = %v; want a MissingError", err)
		}
	}
}
