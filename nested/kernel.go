package nested

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// InstallCommand installs everything the harness needs on a Debian host.
const InstallCommand = "apt-get install -y qemu-system-x86 linux-image-amd64 busybox-static"

// MissingError says that a host prerequisite is not installed.
type MissingError struct {
	What string // what is missing, e.g. "qemu-system-x86_64 (package qemu-system-x86)"
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s not found; install with: %s", e.What, InstallCommand)
}

// Kernel is an installed kernel image and its modules.
type Kernel struct {
	Version    string // uname -r of the kernel, e.g. "6.1.0-57-amd64"
	Image      string // e.g. /boot/vmlinuz-6.1.0-57-amd64
	ModulesDir string // e.g. /lib/modules/6.1.0-57-amd64
}

// FindKernel returns the newest kernel (by version order) that has both an
// image bootDir/vmlinuz-VERSION and a module tree modulesRoot/VERSION with a
// modules.dep. On a Debian host, bootDir is /boot and modulesRoot /lib/modules.
func FindKernel(bootDir, modulesRoot string) (Kernel, error) {
	images, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return Kernel{}, fmt.Errorf("list kernels: %w", err)
	}
	var found []Kernel
	var noModules []string
	for _, img := range images {
		st, err := os.Stat(img)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		ver := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join(modulesRoot, ver)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err != nil {
			noModules = append(noModules, ver)
			continue
		}
		found = append(found, Kernel{Version: ver, Image: img, ModulesDir: mods})
	}
	if len(found) == 0 {
		what := fmt.Sprintf("Linux kernel (%s/vmlinuz-* with %s/VERSION/modules.dep, package linux-image-amd64)", bootDir, modulesRoot)
		if len(noModules) > 0 {
			what = fmt.Sprintf("modules of kernel %s (%s/%s/modules.dep)", strings.Join(noModules, ", "), modulesRoot, noModules[0])
		}
		return Kernel{}, &MissingError{What: what}
	}
	sort.Slice(found, func(i, j int) bool { return compareVersions(found[i].Version, found[j].Version) < 0 })
	return found[len(found)-1], nil
}

// compareVersions orders kernel version strings the way `sort -V` does for
// them: runs of digits compare as numbers, everything else byte-wise, so
// 6.1.0-10-amd64 sorts after 6.1.0-9-amd64 and 6.12.0 after 6.1.0.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da != db {
			// A number sorts after a non-number, as in "6.1" vs "6.a".
			if da {
				return 1
			}
			return -1
		}
		var ra, rb string
		ra, a = splitRun(a, da)
		rb, b = splitRun(b, db)
		if da {
			ra, rb = strings.TrimLeft(ra, "0"), strings.TrimLeft(rb, "0")
			if len(ra) != len(rb) {
				if len(ra) < len(rb) {
					return -1
				}
				return 1
			}
		}
		if c := strings.Compare(ra, rb); c != 0 {
			return c
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	default:
		return 1
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// splitRun splits s after its leading run of digits (digits=true) or non-digits.
func splitRun(s string, digits bool) (run, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return s[:i], s[i:]
}

// findBusybox returns the path of a statically linked busybox, which the
// initramfs needs because it holds no C library.
func findBusybox(candidates ...string) (string, error) {
	for _, p := range candidates {
		static, err := isStaticELF(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("busybox %s: %w", p, err)
		}
		if static {
			return p, nil
		}
	}
	return "", &MissingError{What: fmt.Sprintf("statically linked busybox (%s, package busybox-static)", strings.Join(candidates, " or "))}
}
