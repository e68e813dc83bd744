package kernel

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseFragment(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Option
		wantErr string // substring; "" means success
	}{
		{
			name: "values and comments",
			in:   "# why\n\nCONFIG_A=y\n  CONFIG_B=n  \nCONFIG_C=4\nCONFIG_D=\"x y\"\nCONFIG_E=0x1f\nCONFIG_F=-1\n",
			want: []Option{
				{Name: "CONFIG_A", Value: "y", Line: 3},
				{Name: "CONFIG_B", Value: "n", Line: 4},
				{Name: "CONFIG_C", Value: "4", Line: 5},
				{Name: "CONFIG_D", Value: `"x y"`, Line: 6},
				{Name: "CONFIG_E", Value: "0x1f", Line: 7},
				{Name: "CONFIG_F", Value: "-1", Line: 8},
			},
		},
		{name: "module value parses", in: "CONFIG_A=m\n", want: []Option{{Name: "CONFIG_A", Value: "m", Line: 1}}},
		{name: "empty", in: "", want: nil},
		{name: "duplicate", in: "CONFIG_A=y\nCONFIG_A=n\n", wantErr: "already set on line 1"},
		{name: "not-set comment", in: "# CONFIG_A is not set\n", wantErr: "write CONFIG_A=n"},
		{name: "missing prefix", in: "A=y\n", wantErr: "not CONFIG_X=value"},
		{name: "bad value", in: "CONFIG_A=yes\n", wantErr: "has value"},
		{name: "empty value", in: "CONFIG_A=\n", wantErr: "has value"},
		{name: "trailing comment", in: "CONFIG_A=y # why\n", wantErr: "has value"},
		{name: "unterminated string", in: "CONFIG_A=\"x\n", wantErr: "has value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFragment([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFragment() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFragment() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseFragment() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGuestConfig checks the real fragment without building it: it must parse, build
// nothing as a module, and keep what the monitor and the guest rely on.
func TestGuestConfig(t *testing.T) {
	data, err := os.ReadFile("guest.config")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := ParseFragment(data)
	if err != nil {
		t.Fatalf("guest.config: %v", err)
	}
	got := make(map[string]string)
	for _, o := range opts {
		if o.Value == "m" {
			t.Errorf("guest.config:%d: %s=m, but the guest has no modules", o.Line, o.Name)
		}
		got[o.Name] = o.Value
	}
	// Each entry is something another part of boxd depends on.
	want := map[string]string{
		"CONFIG_MODULES":                     "n", // nothing to load them from
		"CONFIG_ACPI":                        "n", // the monitor builds no ACPI tables
		"CONFIG_PCI":                         "n", // devices are virtio-mmio only
		"CONFIG_X86_MPPARSE":                 "y", // CPUs come from the monitor's MP table
		"CONFIG_SMP":                         "y",
		"CONFIG_PVH":                         "y", // the ELF loader enters via PVH
		"CONFIG_KVM_GUEST":                   "y",
		"CONFIG_VIRTIO_MMIO":                 "y",
		"CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES": "y", // virtio_mmio.device= on the command line
		"CONFIG_VIRTIO_BLK":                  "y",
		"CONFIG_VIRTIO_NET":                  "y",
		"CONFIG_VIRTIO_VSOCKETS":             "y", // the agent's transport
		"CONFIG_HW_RANDOM_VIRTIO":            "y",
		"CONFIG_EXT4_FS":                     "y",
		"CONFIG_OVERLAY_FS":                  "y",
		"CONFIG_SERIAL_8250_CONSOLE":         "y",
		"CONFIG_DEVMEM":                      "y", // guest init writes the boot-timer register
		"CONFIG_DEVTMPFS":                    "y",
		"CONFIG_BLK_DEV_INITRD":              "y",
		"CONFIG_CGROUP_BPF":                  "y", // runc's cgroup v2 device filter
		"CONFIG_USER_NS":                     "y",
		"CONFIG_SECCOMP_FILTER":              "y",
		"CONFIG_NF_TABLES":                   "y",
		"CONFIG_PRINTK_TIME":                 "y", // boot time is read off printk timestamps
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("guest.config: %s=%q, want %q", name, got[name], v)
		}
	}
}

func FuzzParseFragment(f *testing.F) {
	if data, err := os.ReadFile("guest.config"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"q\\\"\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		opts, err := ParseFragment(data)
		if err != nil {
			return
		}
		seen := make(map[string]bool)
		for _, o := range opts {
			if seen[o.Name] {
				t.Fatalf("duplicate %s accepted", o.Name)
			}
			seen[o.Name] = true
		}
	})
}

// needScript skips when build.sh cannot compute a key here (no bash, dpkg or
// linux-source); the message says which.
func needScript(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	out, err := exec.Command("bash", "build.sh", "--print-path").CombinedOutput()
	if err != nil {
		t.Skipf("build.sh cannot compute the cache key here: %s", bytes.TrimSpace(out))
	}
}

func TestPathNotBuilt(t *testing.T) {
	needScript(t)
	t.Setenv("BOXD_CACHE", t.TempDir())
	for name, find := range map[string]func() (string, error){"Path": Path, "BzImagePath": BzImagePath} {
		p, err := find()
		if !errors.Is(err, ErrNotBuilt) {
			t.Errorf("%s() = %q, %v; want ErrNotBuilt in an empty cache", name, p, err)
		}
	}
}

// TestCacheKeyFollowsFragment checks that editing the fragment moves the cache path,
// so a stale kernel is never found for a new fragment.
func TestCacheKeyFollowsFragment(t *testing.T) {
	needScript(t)
	cache := t.TempDir()
	printPath := func(fragment string) string {
		t.Helper()
		cmd := exec.Command("bash", "build.sh", "--print-path")
		cmd.Env = append(os.Environ(), "BOXD_CACHE="+cache, "BOXD_KERNEL_FRAGMENT="+fragment)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("build.sh --print-path: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	data, err := os.ReadFile("guest.config")
	if err != nil {
		t.Fatal(err)
	}
	edited := filepath.Join(t.TempDir(), "edited.config")
	if err := os.WriteFile(edited, append(data, "CONFIG_FUSE_FS=y\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	orig, again, other := printPath("guest.config"), printPath("guest.config"), printPath(edited)
	if orig != again {
		t.Errorf("same fragment, different paths: %q, %q", orig, again)
	}
	if orig == other {
		t.Errorf("edited fragment maps to the same path %q", orig)
	}
	if !strings.HasPrefix(orig, filepath.Join(cache, "kernel")+"/") || filepath.Base(orig) != "vmlinux" {
		t.Errorf("path %q is not <BOXD_CACHE>/kernel/<key>/vmlinux", orig)
	}
}

// TestBuiltKernel checks the cached images when `make kernel` has run.
func TestBuiltKernel(t *testing.T) {
	vmlinux, err := Path()
	if errors.Is(err, ErrNotBuilt) {
		t.Skip("guest kernel not built (make kernel)")
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(vmlinux)
	if err != nil {
		t.Fatalf("vmlinux: %v", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		t.Errorf("vmlinux is %v %v, want ELFCLASS64 EM_X86_64", f.Class, f.Machine)
	}
	// The PVH entry point is advertised in an ELF note (Xen type 18, XEN_ELFNOTE_PHYS32_ENTRY).
	if !hasPVHNote(t, f) {
		t.Error("vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY note: PVH entry missing")
	}
	bz, err := BzImagePath()
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := os.ReadFile(bz)
	if err != nil {
		t.Fatal(err)
	}
	if len(hdr) < 0x206 || string(hdr[0x202:0x206]) != "HdrS" {
		t.Errorf("%s has no HdrS boot-protocol signature", bz)
	}
}

func hasPVHNote(t *testing.T, f *elf.File) bool {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			t.Fatalf("read note segment: %v", err)
		}
		for len(data) >= 12 {
			order := f.ByteOrder
			namesz, descsz, typ := order.Uint32(data), order.Uint32(data[4:]), order.Uint32(data[8:])
			name := data[12:min(len(data), 12+int(namesz))]
			if typ == 18 && bytes.HasPrefix(name, []byte("Xen")) {
				return true
			}
			off := 12 + align4(int(namesz)) + align4(int(descsz))
			if off > len(data) {
				break
			}
			data = data[off:]
		}
	}
	return false
}

func align4(n int) int { return (n + 3) &^ 3 }
