// Package initrd writes small busybox initramfs archives for tests and
// benchmarks: a static busybox at /bin/busybox, a shell script as /init, and
// optionally host binaries (with the shared libraries ldd says they need) at
// their host paths.
package initrd

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// Busybox is where Debian's busybox-static installs its binary.
const Busybox = "/bin/busybox"

// Write creates a newc archive at path holding busybox, script as /init, and
// each host file in extra (a binary is accompanied by its shared libraries) at
// the same path inside the archive.
func Write(path, script string, extra ...string) error {
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return fmt.Errorf("initrd: static busybox (apt-get install busybox-static): %w", err)
	}
	files, err := withLibraries(extra)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	bw := bufio.NewWriter(f)
	w := cpio.Newc.Writer(bw)
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755), cpio.Directory("dev", 0o755),
		cpio.Directory("proc", 0o755), cpio.Directory("sys", 0o755),
		cpio.Directory("tmp", 0o1777),
		// The kernel opens /dev/console for init before init can mount devtmpfs.
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticFile("bin/busybox", string(bb), 0o755),
		cpio.StaticFile("init", script, 0o755),
	}
	dirs := map[string]bool{"bin": true, "dev": true, "proc": true, "sys": true, "tmp": true}
	for _, hp := range files {
		b, err := os.ReadFile(hp)
		if err != nil {
			f.Close()
			os.Remove(path)
			return fmt.Errorf("initrd: %w", err)
		}
		name := strings.TrimPrefix(filepath.Clean(hp), "/")
		var parents []string
		for d := filepath.Dir(name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			parents = append(parents, d)
			dirs[d] = true
		}
		slices.Reverse(parents)
		for _, d := range parents {
			recs = append(recs, cpio.Directory(d, 0o755))
		}
		recs = append(recs, cpio.StaticFile(name, string(b), 0o755))
	}
	for i, r := range recs {
		r.Ino = uint64(i + 1)
		if err = w.WriteRecord(r); err != nil {
			break
		}
	}
	if err == nil {
		err = cpio.WriteTrailer(w)
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("initrd: write %s: %w", path, err)
	}
	return nil
}

// withLibraries returns files plus the shared libraries (and dynamic loader)
// each dynamically linked one needs, as ldd reports them, without duplicates.
// Symlinked libraries are resolved to their targets' contents at the link's
// path, which is where the loader looks.
func withLibraries(files []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, f := range files {
		add(f)
		b, err := exec.Command("ldd", f).Output()
		if err != nil {
			// ldd fails on static binaries ("not a dynamic executable").
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, field := range strings.Fields(line) {
				if strings.HasPrefix(field, "/") {
					add(field)
				}
			}
		}
	}
	return out, nil
}
