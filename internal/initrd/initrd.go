// Package initrd writes small busybox initramfs archives for tests and
// benchmarks: a static busybox at /bin/busybox and a shell script as /init.
package initrd

import (
	"bufio"
	"fmt"
	"os"

	"github.com/u-root/u-root/pkg/cpio"
)

// Busybox is where Debian's busybox-static installs its binary.
const Busybox = "/bin/busybox"

// Write creates a newc archive at path holding busybox and script as /init.
func Write(path, script string) error {
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return fmt.Errorf("initrd: static busybox (apt-get install busybox-static): %w", err)
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
