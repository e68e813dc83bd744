package nested

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// compressed returns data compressed as a module file with suffix would be.
func compressed(t *testing.T, suffix string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	var err error
	switch suffix {
	case ".ko":
		return data
	case ".ko.gz":
		w = gzip.NewWriter(&b)
	case ".ko.xz":
		// No XZ writer among the dependencies: the one xz module is a
		// fixture (xz --check=crc32, as kmod's build compresses).
		xzed, err := os.ReadFile("testdata/module.ko.xz")
		if err != nil {
			t.Fatal(err)
		}
		if want := "\x7fELF module ccp"; string(data) != want {
			t.Fatalf("testdata/module.ko.xz holds %q; asked for %q", want, data)
		}
		return xzed
	case ".ko.zst":
		w, err = zstd.NewWriter(&b)
	default:
		t.Fatalf("suffix %s", suffix)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// fakeInitramfs writes a busybox stand-in and one module per compression.
func fakeInitramfs(t *testing.T) (initramfs, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	ir := initramfs{busybox: filepath.Join(dir, "busybox"), init: []byte("#!/bin/busybox sh\necho hi\n")}
	mustWrite(t, ir.busybox, "busybox bytes")
	want := map[string][]byte{
		"init":        ir.init,
		"bin/busybox": []byte("busybox bytes"),
	}
	for i, suffix := range []string{".ko", ".ko.gz", ".ko.xz", ".ko.zst"} {
		name := []string{"irqbypass", "kvm", "ccp", "kvm_amd"}[i]
		elf := []byte("\x7fELF module " + name)
		p := filepath.Join(dir, name+suffix)
		if err := os.WriteFile(p, compressed(t, suffix, elf), 0o644); err != nil {
			t.Fatal(err)
		}
		ir.modules = append(ir.modules, Module{Name: name, Path: p})
		want[filepath.Join("modules", []string{"00-", "01-", "02-", "03-"}[i]+name+".ko")] = elf
	}
	return ir, want
}

func TestInitramfsRoundTrip(t *testing.T) {
	ir, wantFiles := fakeInitramfs(t)
	var b bytes.Buffer
	if err := ir.write(&b); err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	gotFiles := map[string][]byte{}
	modes := map[string]uint64{}
	for _, r := range recs {
		modes[r.Name] = r.Mode
		if r.Mode&cpio.S_IFMT != cpio.S_IFREG {
			continue
		}
		data, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		gotFiles[r.Name] = data
	}
	if diff := cmp.Diff(wantFiles, gotFiles); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	for name, want := range map[string]uint64{
		"init":        cpio.S_IFREG | 0o755,
		"bin/busybox": cpio.S_IFREG | 0o755,
		"dev/console": cpio.S_IFCHR | 0o600,
		"host":        cpio.S_IFDIR | 0o755,
		"proc":        cpio.S_IFDIR | 0o755,
	} {
		if modes[name] != want {
			t.Errorf("%s: mode %#o; want %#o", name, modes[name], want)
		}
	}
	if b.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", b.Len())
	}
	// The archive is reproducible: same inputs, same bytes.
	var again bytes.Buffer
	if err := ir.write(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), again.Bytes()) {
		t.Error("two writes of the same initramfs differ")
	}
}

func TestReadModuleErrors(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"bad.ko.gz", "bad.ko.xz", "bad.ko.zst", "module.o"} {
		p := filepath.Join(dir, name)
		mustWrite(t, p, "not compressed")
		if _, err := readModule(p); err == nil {
			t.Errorf("readModule(%s) succeeded; want an error", name)
		}
	}
}
