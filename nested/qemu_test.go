package nested

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func TestQEMUArgsGolden(t *testing.T) {
	tests := []struct {
		name string
		m    machine
	}{
		{"with-out", machine{
			kernel: "/boot/vmlinuz-6.1.0-57-amd64", initrd: "/cache/nested/initramfs.cpio",
			memMiB: 8192, cpus: 2, runDir: "/tmp/boxd-nested-1", outDir: "/work/out,v1",
		}},
		{"no-out", machine{
			kernel: "/boot/vmlinuz-6.1.0-57-amd64", initrd: "/cache/nested/initramfs.cpio",
			memMiB: 1024, cpus: 1, runDir: "/tmp/boxd-nested-2",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(qemuArgs(tc.m), "\n") + "\n"
			golden := filepath.Join("testdata", "qemu-args-"+tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("qemu args (-want +got):\n%s", diff)
			}
		})
	}
}

// TestQEMUArgsInvariants states what the golden files must keep showing.
func TestQEMUArgsInvariants(t *testing.T) {
	args := qemuArgs(machine{kernel: "k", initrd: "i", memMiB: 512, cpus: 3, runDir: "/r", outDir: "/o"})
	value := func(flag string) []string {
		var vs []string
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag {
				vs = append(vs, args[i+1])
			}
		}
		return vs
	}
	for _, a := range args {
		if strings.Contains(a, "stdio") {
			t.Errorf("argument %q uses stdio; CI has no terminal on stdin", a)
		}
	}
	for _, want := range []string{"-no-reboot", "-nodefaults", "-no-user-config"} {
		if !slices.Contains(args, want) {
			t.Errorf("missing %s", want)
		}
	}
	if got := value("-cpu"); !slices.Equal(got, []string{"EPYC-Rome,+svm,+npt"}) {
		t.Errorf("-cpu %v", got)
	}
	if got := value("-smp"); !slices.Equal(got, []string{"3"}) {
		t.Errorf("-smp %v", got)
	}
	if got := value("-m"); !slices.Equal(got, []string{"512M"}) {
		t.Errorf("-m %v", got)
	}
	fsdevs := value("-fsdev")
	if len(fsdevs) != 3 || !strings.Contains(fsdevs[0], "path=/,") || !strings.Contains(fsdevs[0], "readonly=on") ||
		!strings.Contains(fsdevs[1], "path=/r,") || strings.Contains(fsdevs[1], "readonly") ||
		!strings.Contains(fsdevs[2], "path=/o,") || strings.Contains(fsdevs[2], "readonly") {
		t.Errorf("-fsdev %v; want the root read-only, /r and /o writable", fsdevs)
	}
	if got := value("-chardev"); len(got) != 1 || !strings.Contains(got[0], "path=/dev/fd/3") {
		t.Errorf("-chardev %v; want only the console on the inherited pipe", got)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16)": "SeaBIOS (version 1.16)",
		"Booting from ROM..\x1bc\x1b[?7l\x1b[2J":     "Booting from ROM..",
		"tab\tkept\r":                                "tab\tkept",
		"\x1b[":                                      "",
		"plain":                                      "plain",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestFilterLines(t *testing.T) {
	in := "qemu-system-x86_64: warning: TCG doesn't support requested feature: CPUID.01H:ECX.fma [bit 12]\n" +
		"qemu-system-x86_64: -device foo: real problem\n" +
		"\n" +
		"qemu-system-x86_64: warning: TCG doesn't support requested feature: CPUID.07H:EBX.avx2 [bit 5]\n" +
		"last line without newline"
	var out strings.Builder
	var kept []string
	filterLines(strings.NewReader(in), &out, "qemu: ", func(l string) bool { kept = append(kept, l); return true })
	want := []string{"qemu-system-x86_64: -device foo: real problem", "last line without newline"}
	if diff := cmp.Diff(want, kept); diff != "" {
		t.Errorf("kept lines (-want +got):\n%s", diff)
	}
	if got := out.String(); got != "qemu: "+want[0]+"\nqemu: "+want[1]+"\n" {
		t.Errorf("output %q", got)
	}
}
