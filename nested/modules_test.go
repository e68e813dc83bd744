package nested

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/arch/x86/kvm/kvm-amd.ko":     "kvm_amd",
		"kernel/arch/x86/kvm/kvm-amd.ko.xz":  "kvm_amd",
		"kernel/fs/9p/9p.ko.zst":             "9p",
		"kernel/drivers/char/virtio-rng.ko":  "virtio_rng",
		"kvm-amd":                            "kvm_amd",
		"9pnet_virtio":                       "9pnet_virtio",
		"kernel/fs/netfs/netfs.ko.gz":        "netfs",
		"kernel/drivers/virtio/virtio_pci.o": "virtio_pci.o",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q; want %q", in, got, want)
		}
	}
}

func loadTestDB(t *testing.T) *ModuleDB {
	t.Helper()
	db, err := LoadModuleDB("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestResolve(t *testing.T) {
	db := loadTestDB(t)
	tests := []struct {
		name  string
		names []string
		want  []string // module paths relative to testdata, in load order
	}{
		{"kvm-amd with deps first", []string{"kvm-amd"}, []string{
			"kernel/drivers/crypto/ccp/ccp.ko",
			"kernel/virt/lib/irqbypass.ko",
			"kernel/arch/x86/kvm/kvm.ko",
			"kernel/arch/x86/kvm/kvm-amd.ko",
		}},
		{"shared deps once", []string{"9pnet_virtio", "9p"}, []string{
			"kernel/net/9p/9pnet.ko.xz",
			"kernel/drivers/virtio/virtio_ring.ko",
			"kernel/drivers/virtio/virtio.ko",
			"kernel/net/9p/9pnet_virtio.ko",
			"kernel/fs/netfs/netfs.ko.gz",
			"kernel/fs/fscache/fscache.ko.zst",
			"kernel/fs/9p/9p.ko.xz",
		}},
		{"builtins skipped", []string{"virtio_pci", "overlay", "irqbypass"}, []string{
			"kernel/virt/lib/irqbypass.ko",
		}},
		{"nothing", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mods, err := db.Resolve(tc.names...)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range mods {
				rel, err := filepath.Rel("testdata", m.Path)
				if err != nil {
					t.Fatal(err)
				}
				if m.Name != moduleName(rel) {
					t.Errorf("module %s has name %s", rel, m.Name)
				}
				got = append(got, rel)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Resolve(%v) (-want +got):\n%s", tc.names, diff)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name, dep, module, errHas string
	}{
		{"unknown", "a.ko:\n", "nosuch", "neither in modules.dep nor built in"},
		{"missing dep", "a.ko: b.ko\n", "a", "b (needed by a)"},
		{"cycle", "a.ko: b.ko\nb.ko: a.ko\n", "a", "cycle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, err := parseModulesDep(strings.NewReader(tc.dep))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Resolve(tc.module); err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("Resolve(%s) err = %v; want one containing %q", tc.module, err, tc.errHas)
			}
		})
	}
}

func TestParseModulesDepErrors(t *testing.T) {
	for _, in := range []string{
		"no colon here\n",
		": a.ko\n",
		"a.txt: b.ko\n",
		"a.ko: b.txt\n",
	} {
		if _, err := parseModulesDep(strings.NewReader(in)); err == nil {
			t.Errorf("parseModulesDep(%q) succeeded; want an error", in)
		}
	}
}

// TestResolveHost checks the modules L1 loads against the installed kernel.
func TestResolveHost(t *testing.T) {
	k, err := FindKernel("/boot", "/lib/modules")
	if err != nil {
		t.Skipf("no installed kernel here: %v", err)
	}
	db, err := LoadModuleDB(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := db.Resolve(initModules...)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		if _, dup := pos[m.Name]; dup {
			t.Errorf("module %s listed twice", m.Name)
		}
		pos[m.Name] = i
		if _, err := os.Stat(m.Path); err != nil {
			t.Error(err)
		}
	}
	for _, m := range mods {
		for _, d := range db.deps[m.Name] {
			if db.builtin[d] {
				continue
			}
			if p, ok := pos[d]; !ok || p > pos[m.Name] {
				t.Errorf("%s is loaded before its dependency %s", m.Name, d)
			}
		}
	}
	if _, ok := pos["kvm_amd"]; !ok {
		t.Errorf("kvm_amd not resolved: %v", mods)
	}
}

func FuzzParseModulesDep(f *testing.F) {
	seed, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("a.ko: b.ko\nb.ko: a.ko\n")
	f.Add("a.ko:\n# comment\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		db, err := parseModulesDep(strings.NewReader(in))
		if err != nil {
			return
		}
		for name := range db.path {
			mods, err := db.Resolve(name)
			if err != nil {
				continue
			}
			seen := map[string]bool{}
			for _, m := range mods {
				if seen[m.Name] {
					t.Fatalf("Resolve(%s) lists %s twice", name, m.Name)
				}
				seen[m.Name] = true
			}
		}
	})
}
