package nested

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvInside is set to "1" in the environment of every command run in L1.
const EnvInside = "BOXD_NESTED"

// EnvOut names the writable output directory, in L1 and in direct runs alike.
const EnvOut = "BOXD_NESTED_OUT"

// Inside reports whether this process runs inside the nested harness's L1 VM.
func Inside() bool { return os.Getenv(EnvInside) == "1" }

// HostHasHardwareKVM reports whether this machine's /dev/kvm is backed by
// hardware virtualization (VT-x or AMD-V), so a Linux guest can boot on it
// directly. reason says why, in one line, either way.
func HostHasHardwareKVM() (ok bool, reason string) {
	return hardwareKVM("/proc/cpuinfo", "/dev/kvm", "/sys/module/kvm_pvm")
}

func hardwareKVM(cpuinfo, kvmDev, pvmModule string) (bool, string) {
	f, err := os.Open(cpuinfo)
	if err != nil {
		return false, fmt.Sprintf("cannot read CPU flags: %v", err)
	}
	defer f.Close()
	flag, err := virtFlag(f)
	if err != nil {
		return false, fmt.Sprintf("cannot read CPU flags: %v", err)
	}
	if flag == "" {
		if _, err := os.Stat(pvmModule); err == nil {
			return false, "no vmx/svm CPU flag; /dev/kvm is PVM (kvm_pvm), which cannot boot a stock Linux guest"
		}
		return false, "no vmx/svm CPU flag (no hardware virtualization)"
	}
	st, err := os.Stat(kvmDev)
	if err != nil {
		return false, fmt.Sprintf("CPU has %s but %s is missing (load kvm-intel or kvm-amd)", flag, kvmDev)
	}
	if st.Mode()&os.ModeCharDevice == 0 {
		return false, fmt.Sprintf("%s is not a character device", kvmDev)
	}
	return true, fmt.Sprintf("CPU has %s and %s exists", flag, kvmDev)
}

// virtFlag returns "vmx" or "svm" if any "flags" line of a /proc/cpuinfo has it.
func virtFlag(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(val) {
			if fl == "vmx" || fl == "svm" {
				return fl, nil
			}
		}
	}
	return "", sc.Err()
}
