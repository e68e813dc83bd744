package nested

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// fdConsole is the file descriptor of L1's serial console in QEMU, which
// inherits it (exec.Cmd.ExtraFiles start at 3) and opens /dev/fd/3: on Linux
// that reopens the inherited pipe.
const fdConsole = 3

// machine is everything QEMU's command line depends on.
type machine struct {
	kernel string // vmlinux (booted through PVH) or bzImage
	initrd string
	memMiB int
	cpus   int
	runDir string // per-run directory, shared writable at tag "boxd"
	outDir string // shared writable at tag "out"; "" for none
}

// kernelArgs is L1's kernel command line. quiet keeps the
// console to warnings; panic=-1 turns a panic into a reboot, which
// -no-reboot turns into QEMU exiting; mitigations=off saves emulated work
// that buys nothing in a throwaway test VM.
const kernelArgs = "console=ttyS0 quiet panic=-1 mitigations=off"

// qemuArgs returns QEMU's arguments (without argv[0]) for m.
func qemuArgs(m machine) []string {
	args := []string{
		// TCG with an emulated AMD CPU that has SVM and nested paging: the
		// L1 kernel's kvm-amd then offers a hardware-backed /dev/kvm.
		"-accel", "tcg,thread=multi",
		"-cpu", "EPYC-Rome,+svm,+npt",
		"-M", "q35",
		"-smp", strconv.Itoa(m.cpus),
		"-m", strconv.Itoa(m.memMiB) + "M",
		// No default devices or config files, no display, and no stdio
		// chardev: QEMU's stdin is /dev/null and CI has no terminal.
		"-nodefaults", "-no-user-config", "-display", "none",
		"-no-reboot",
		"-kernel", m.kernel,
		"-initrd", m.initrd,
		"-append", kernelArgs,
		"-chardev", fmt.Sprintf("file,id=console,path=/dev/fd/%d", fdConsole),
		"-serial", "chardev:console",
		"-fsdev", "local,id=host,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=host,mount_tag=host",
		"-fsdev", "local,id=boxd,path=" + qemuEscape(m.runDir) + ",security_model=none",
		"-device", "virtio-9p-pci,fsdev=boxd,mount_tag=boxd",
	}
	if m.outDir != "" {
		args = append(args,
			"-fsdev", "local,id=out,path="+qemuEscape(m.outDir)+",security_model=none,multidevs=remap",
			"-device", "virtio-9p-pci,fsdev=out,mount_tag=out")
	}
	// Entropy from the host, so getrandom(2) in L1 never waits.
	args = append(args, "-device", "virtio-rng-pci")
	return args
}

// qemuEscape escapes a value inside a QEMU option string, where ',' separates
// options and ",," stands for a literal comma.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// qemuNoise reports whether a line QEMU prints is expected and useless: TCG
// lists every EPYC-Rome CPUID feature it does not emulate.
func qemuNoise(line string) bool {
	return strings.Contains(line, "TCG doesn't support requested feature") || strings.TrimSpace(line) == ""
}

// filterLines copies the lines of r that are not noise, and that keep (if
// not nil) returns true for, to w, each prefixed. It reads r to EOF whatever
// happens to w, so the writer never blocks QEMU.
func filterLines(r io.Reader, w io.Writer, prefix string, keep func(string) bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sanitize(sc.Text())
		if qemuNoise(line) {
			continue
		}
		if keep != nil && !keep(line) {
			continue
		}
		if w != nil {
			fmt.Fprintf(w, "%s%s\n", prefix, line)
		}
	}
	io.Copy(io.Discard, r) // a line over the scanner's limit: drain the rest
}

// sanitize drops terminal escape sequences and other control characters
// (the firmware clears the screen on the serial console) from a line.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b:
			// ESC [ params final-byte, or ESC + one byte.
			if i+1 < len(s) && s[i+1] == '[' {
				i += 2
				for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
					i++
				}
			} else {
				i++
			}
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
		}
	}
	return b.String()
}
