package artifact

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

var errNotBuilt = errors.New("not built")

func writeScript(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "build.sh")
	if err := os.WriteFile(p, []byte("#!/bin/bash\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPath(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "vmlinux")
	script := writeScript(t, dir, "echo progress; echo "+out+"\n")
	if _, err := Path(script, errNotBuilt); !errors.Is(err, errNotBuilt) {
		t.Fatalf("missing artefact: err = %v, want errNotBuilt", err)
	}
	if err := os.WriteFile(out, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := Path(script, errNotBuilt); err != nil || got != out {
		t.Fatalf("Path = %q, %v; want %q", got, err, out)
	}
	if _, err := Path(writeScript(t, t.TempDir(), "exit 3\n"), errNotBuilt); !errors.Is(err, errNotBuilt) {
		t.Fatalf("failing script: err = %v, want errNotBuilt", err)
	}
	if _, err := Path(writeScript(t, t.TempDir(), "echo relative\n"), errNotBuilt); err == nil {
		t.Fatal("relative path accepted")
	}
}

func TestScript(t *testing.T) {
	src := t.TempDir()
	p := writeScript(t, src, "")
	if got, err := Script(src, "kernel/build.sh"); err != nil || got != p {
		t.Fatalf("Script beside the source = %q, %v", got, err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "kernel", "sub"), 0o755)
	want := writeScript(t, filepath.Join(root, "kernel"), "")
	t.Chdir(filepath.Join(root, "kernel", "sub"))
	if got, err := Script("", "kernel/build.sh"); err != nil || got != want {
		t.Fatalf("Script above the working directory = %q, %v; want %q", got, err, want)
	}
	if _, err := Script("", "nope/build.sh"); err == nil {
		t.Fatal("missing script found")
	}
}
