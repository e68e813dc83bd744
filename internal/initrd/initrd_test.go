package initrd

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/u-root/u-root/pkg/cpio"
)

func TestWrite(t *testing.T) {
	if _, err := os.Stat(Busybox); err != nil {
		t.Skipf("needs %s (busybox-static): %v", Busybox, err)
	}
	p := filepath.Join(t.TempDir(), "rd.cpio")
	if err := Write(p, "#!/bin/busybox sh\necho hi\n"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
		if r.Name == "init" {
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil || string(b) != "#!/bin/busybox sh\necho hi\n" {
				t.Errorf("init = %q, %v", b, err)
			}
			if r.Mode&0o777 != 0o755 {
				t.Errorf("init mode = %o", r.Mode)
			}
		}
	}
	want := []string{"bin", "dev", "proc", "sys", "tmp", "dev/console", "bin/busybox", "init"}
	if d := cmp.Diff(want, names); d != "" {
		t.Errorf("archive entries (-want +got):\n%s", d)
	}
}

func TestWriteWithBinary(t *testing.T) {
	if _, err := os.Stat(Busybox); err != nil {
		t.Skipf("needs %s (busybox-static): %v", Busybox, err)
	}
	bin := "/bin/ls"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("needs %s: %v", bin, err)
	}
	p := filepath.Join(t.TempDir(), "rd.cpio")
	if err := Write(p, "#!/bin/busybox sh\n", bin); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range recs {
		names[r.Name] = true
	}
	for _, want := range []string{"bin/ls", "lib64/ld-linux-x86-64.so.2", "lib64"} {
		if !names[want] {
			t.Errorf("archive lacks %s; has %v", want, names)
		}
	}
}
