package agent_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// TestFileRoundTrip uploads and downloads 20 MiB and compares hashes.
func TestFileRoundTrip(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "big.bin")
	const size = 20<<20 + 123
	src := rand.NewChaCha8([32]byte{7})
	h := sha256.New()
	if err := c.WriteFile(ctx, path, 0o640, io.TeeReader(io.LimitReader(src, size), h)); err != nil {
		t.Fatal(err)
	}
	want := h.Sum(nil)

	local, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(local); string(got[:]) != string(want) {
		t.Error("file on disk differs from the upload")
	}

	rc, info, err := c.ReadFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	h.Reset()
	n, err := io.Copy(h, rc)
	rc.Close()
	if err != nil || n != size {
		t.Fatalf("ReadFile: %d bytes, %v", n, err)
	}
	if string(h.Sum(nil)) != string(want) {
		t.Error("download differs from the upload")
	}
	if info.Size != size || info.FileMode().Perm() != 0o640 || info.Name != "big.bin" {
		t.Errorf("ReadFile info: %+v", info)
	}
}

func TestFileOps(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.MkdirAll(ctx, dir+"/a/b", 0o755))
	must(c.WriteFile(ctx, dir+"/a/b/f.txt", 0o600, strings.NewReader("hello")))
	must(c.WriteFile(ctx, dir+"/a/g.txt", 0o644, strings.NewReader("")))
	must(os.Symlink("b/f.txt", dir+"/a/link"))

	fi, err := c.Stat(ctx, dir+"/a/link") // follows the link
	must(err)
	if fi.Size != 5 || fi.FileMode() != 0o600 || fi.Uid != uint32(os.Getuid()) {
		t.Errorf("Stat: %+v", fi)
	}
	list, err := c.ListDir(ctx, dir+"/a")
	must(err)
	type entry struct {
		Name string
		Mode fs.FileMode
		Size int64
		Link string
	}
	var got []entry
	for _, fi := range list {
		e := entry{fi.Name, fi.FileMode(), fi.Size, fi.Link}
		if fi.IsDir() {
			e.Size = 0
		}
		got = append(got, e)
	}
	want := []entry{
		{"b", fs.ModeDir | 0o755, 0, ""},
		{"g.txt", 0o644, 0, ""},
		{"link", fs.ModeSymlink | 0o777, int64(len("b/f.txt")), "b/f.txt"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListDir (-want +got):\n%s", diff)
	}

	if err := c.Remove(ctx, dir+"/a"); err == nil {
		t.Error("Remove of a non-empty directory succeeded")
	}
	must(c.Remove(ctx, dir+"/a/g.txt"))
	must(c.RemoveAll(ctx, dir+"/a"))
	for _, p := range []string{dir + "/a", dir + "/a/g.txt"} {
		if _, err := c.Stat(ctx, p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%s) after removal: %v", p, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestFileErrors(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"read missing", func() error { _, _, err := c.ReadFile(ctx, dir+"/nope"); return err }(), fs.ErrNotExist},
		{"read directory", func() error { _, _, err := c.ReadFile(ctx, dir); return err }(), fs.ErrInvalid},
		{"write into missing dir", c.WriteFile(ctx, dir+"/x/y", 0o644, strings.NewReader("z")), fs.ErrNotExist},
		{"relative path", c.WriteFile(ctx, "rel", 0o644, strings.NewReader("z")), fs.ErrInvalid},
		{"list missing", func() error { _, err := c.ListDir(ctx, dir+"/nope"); return err }(), fs.ErrNotExist},
		{"remove root", c.RemoveAll(ctx, "/"), fs.ErrInvalid},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, tt.err, tt.want)
		}
	}
}

// failingReader fails after some bytes, like a broken local source.
type failingReader struct{ n int }

var errSource = errors.New("source broke")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errSource
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

// TestWriteFileAtomic: an upload that fails midway leaves the old file, and no
// temporary file, behind.
func TestWriteFileAtomic(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	path := dir + "/f"
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := c.WriteFile(ctx, path, 0o644, &failingReader{n: 3 << 20})
	if !errors.Is(err, errSource) {
		t.Fatalf("WriteFile: %v", err)
	}
	// The server removes its temporary file when it sees the abort; a ping
	// after it orders us behind that on the same connection only loosely, so
	// wait for the directory to settle.
	eventually(t, "the temporary file to go", func() bool {
		e, _ := os.ReadDir(dir)
		return len(e) == 1
	})
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("file now %q", b)
	}
}

func TestReadFileEarlyClose(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx := context.Background()
	path := t.TempDir() + "/f"
	if err := os.WriteFile(path, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, _, err := c.ReadFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping after an abandoned download: %v", err)
	}
}
