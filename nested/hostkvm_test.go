package nested

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVirtFlag(t *testing.T) {
	tests := []struct {
		name, cpuinfo, want string
	}{
		{"amd", "processor\t: 0\nflags\t\t: fpu vme svm npt\n", "svm"},
		{"intel", "flags\t\t: fpu vmx ept\n", "vmx"},
		{"none", "flags\t\t: fpu vme hypervisor\n", ""},
		{"flag elsewhere", "model name\t: svm vmx\nflags\t\t: fpu\n", ""},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := virtFlag(strings.NewReader(tc.cpuinfo))
			if err != nil || got != tc.want {
				t.Errorf("virtFlag = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestHardwareKVM(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	svm := write("svm", "flags\t: fpu svm\n")
	plain := write("plain", "flags\t: fpu\n")
	regular := write("regular-file", "")
	pvm := filepath.Join(dir, "kvm_pvm")
	if err := os.Mkdir(pvm, 0o755); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	// /dev/null stands in for /dev/kvm: any character device will do.
	tests := []struct {
		name                  string
		cpuinfo, dev, pvmPath string
		want                  bool
		reason                string
	}{
		{"hardware", svm, "/dev/null", missing, true, "CPU has svm"},
		{"no flag", plain, "/dev/null", missing, false, "no vmx/svm"},
		{"pvm", plain, "/dev/null", pvm, false, "PVM"},
		{"no device", svm, missing, missing, false, "is missing"},
		{"not a device", svm, regular, missing, false, "not a character device"},
		{"no cpuinfo", missing, "/dev/null", missing, false, "cannot read CPU flags"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := hardwareKVM(tc.cpuinfo, tc.dev, tc.pvmPath)
			if got != tc.want || !strings.Contains(reason, tc.reason) {
				t.Errorf("hardwareKVM = %v, %q; want %v and a reason containing %q", got, reason, tc.want, tc.reason)
			}
		})
	}
}
