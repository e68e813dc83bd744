package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/u-root/u-root/pkg/cpio"
)

// inputs writes fake binaries and returns a Spec over them.
func inputs(t *testing.T) Spec {
	t.Helper()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return Spec{
		Init:     write("init", "INIT"),
		Boxd:     write("boxd", "BOXD"),
		Busybox:  write("busybox", "BUSYBOX"),
		Applets:  []string{"cat", "ls", "sh"},
		Compress: None,
	}
}

// list returns "name mode [size|target]" for each record of an archive.
func list(t *testing.T, archive []byte, compress Compression) ([]string, map[string]string) {
	t.Helper()
	if compress == Gzip {
		zr, err := gzip.NewReader(bytes.NewReader(archive))
		if err != nil {
			t.Fatal(err)
		}
		if archive, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(archive)))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	contents := map[string]string{}
	for _, r := range recs {
		line := fmt.Sprintf("%s %06o", r.Name, r.Mode)
		if r.Mode&cpio.S_IFMT == cpio.S_IFCHR {
			line += fmt.Sprintf(" %d:%d", r.Rmajor, r.Rminor)
		}
		if r.ReaderAt != nil && r.FileSize > 0 {
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			contents[r.Name] = string(b)
			if r.Mode&cpio.S_IFMT == cpio.S_IFLNK {
				line += " -> " + string(b)
			}
		}
		if r.UID != 0 || r.GID != 0 || r.MTime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d, want all zero", r.Name, r.UID, r.GID, r.MTime)
		}
		out = append(out, line)
	}
	return out, contents
}

func TestWriteContents(t *testing.T) {
	for _, c := range []Compression{None, Gzip} {
		t.Run(string(c), func(t *testing.T) {
			s := inputs(t)
			s.Compress = c
			var buf bytes.Buffer
			if err := s.Write(&buf); err != nil {
				t.Fatal(err)
			}
			got, contents := list(t, buf.Bytes(), c)
			want := []string{
				"bin 040755", "dev 040755", "etc 040755", "newroot 040755", "proc 040555",
				"root 040700", "run 040755", "sys 040555", "tmp 041777",
				"dev/console 020600 5:1",
				"etc/passwd 100644", "etc/group 100644",
				"bin/init 100755", "bin/boxd 100755", "bin/busybox 100755", "init 120777 -> bin/init",
				"bin/cat 120777 -> busybox", "bin/ls 120777 -> busybox", "bin/sh 120777 -> busybox",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("archive (-want +got):\n%s", diff)
			}
			for name, body := range map[string]string{"bin/init": "INIT", "bin/boxd": "BOXD", "bin/busybox": "BUSYBOX", "etc/passwd": etcPasswd} {
				if contents[name] != body {
					t.Errorf("%s = %q, want %q", name, contents[name], body)
				}
			}
			// Reproducible: the same inputs give the same bytes.
			var again bytes.Buffer
			if err := s.Write(&again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), again.Bytes()) {
				t.Error("two writes of one Spec differ")
			}
		})
	}
}

func TestWriteOptionalBinaries(t *testing.T) {
	s := inputs(t)
	s.Boxd, s.Busybox, s.Applets = "", "", nil
	var buf bytes.Buffer
	if err := s.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, _ := list(t, buf.Bytes(), None)
	for _, l := range got {
		if strings.HasPrefix(l, "bin/") && l != "bin/init 100755" {
			t.Errorf("unexpected %s", l)
		}
	}
}

func TestKey(t *testing.T) {
	base := inputs(t)
	k0, err := base.Key()
	if err != nil {
		t.Fatal(err)
	}
	if k1, _ := base.Key(); k1 != k0 {
		t.Fatal("key not stable")
	}
	// Each input changes the key.
	changes := map[string]func(s *Spec){
		"init contents": func(s *Spec) { os.WriteFile(s.Init, []byte("INIT2"), 0o755) },
		"boxd contents": func(s *Spec) { os.WriteFile(s.Boxd, []byte("BOXD2"), 0o755) },
		"busybox":       func(s *Spec) { os.WriteFile(s.Busybox, []byte("BB2"), 0o755) },
		"applets":       func(s *Spec) { s.Applets = []string{"cat", "ls"} },
		"compression":   func(s *Spec) { s.Compress = Gzip },
		"no boxd":       func(s *Spec) { s.Boxd = "" },
	}
	seen := map[string]string{k0: "base"}
	for name, change := range changes {
		s := inputs(t)
		change(&s)
		k, err := s.Key()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if other, dup := seen[k]; dup {
			t.Errorf("%s gives the same key as %s", name, other)
		}
		seen[k] = name
	}
	// Only contents count: the same bytes elsewhere give the same key.
	moved := inputs(t)
	if k, _ := moved.Key(); k != k0 {
		t.Error("key depends on input paths")
	}
}

func TestSpecRejects(t *testing.T) {
	for name, change := range map[string]func(*Spec){
		"no init":        func(s *Spec) { s.Init = "" },
		"compression":    func(s *Spec) { s.Compress = "zstd" },
		"applet slash":   func(s *Spec) { s.Applets = []string{"../x"} },
		"applet init":    func(s *Spec) { s.Applets = []string{"init"} },
		"applets alone":  func(s *Spec) { s.Busybox = "" },
		"missing binary": func(s *Spec) { s.Boxd = "/nonexistent/boxd" },
	} {
		s := inputs(t)
		change(&s)
		if _, err := s.Key(); err == nil {
			t.Errorf("%s: Key accepted the spec", name)
		}
	}
}

func TestEnsureCaches(t *testing.T) {
	cache := t.TempDir()
	s := inputs(t)
	p1, built, err := Ensure(cache, s)
	if err != nil || !built {
		t.Fatalf("first Ensure: %v, built %v", err, built)
	}
	key, _ := s.Key()
	if want := filepath.Join(cache, "initramfs", key+".cpio"); p1 != want {
		t.Errorf("path %s, want %s", p1, want)
	}
	p2, built, err := Ensure(cache, s)
	if err != nil || built || p2 != p1 {
		t.Errorf("second Ensure: %s, built %v, %v; want the cached %s", p2, built, err, p1)
	}
	s.Compress = Gzip
	p3, built, err := Ensure(cache, s)
	if err != nil || !built || !strings.HasSuffix(p3, ".cpio.gz") {
		t.Errorf("gzip Ensure: %s, built %v, %v", p3, built, err)
	}
	ents, _ := os.ReadDir(filepath.Join(cache, "initramfs"))
	if len(ents) != 2 {
		t.Errorf("cache holds %d entries, want 2 (no temporary files left)", len(ents))
	}
}

func TestCacheDir(t *testing.T) {
	t.Setenv("BOXD_CACHE", "/x/cache")
	if d, _ := CacheDir(); d != "/x/cache" {
		t.Errorf("with BOXD_CACHE: %s", d)
	}
	t.Setenv("BOXD_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if d, _ := CacheDir(); d != "/xdg/boxd" {
		t.Errorf("with XDG_CACHE_HOME: %s", d)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if d, _ := CacheDir(); d != "/home/u/.cache/boxd" {
		t.Errorf("default: %s", d)
	}
}

func TestCheckStatic(t *testing.T) {
	if err := CheckStatic("/bin/busybox"); err != nil {
		if _, serr := os.Stat("/bin/busybox"); serr == nil {
			t.Errorf("static busybox rejected: %v", err)
		}
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to test a dynamic binary with")
	}
	if err := CheckStatic(sh); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("CheckStatic(%s) = %v, want dynamically linked", sh, err)
	}
	if err := CheckStatic(inputs(t).Init); err == nil {
		t.Error("a non-ELF file passed")
	}
}

func TestApplets(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (apt-get install busybox-static)")
	}
	apps, err := Applets("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sh", "ls", "cat", "poweroff", "devmem"} {
		if !slices.Contains(apps, want) {
			t.Errorf("applet %s missing from %d applets", want, len(apps))
		}
	}
	for _, never := range skipApplets {
		if slices.Contains(apps, never) {
			t.Errorf("applet %s must not be linked", never)
		}
	}
}
