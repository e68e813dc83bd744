// Package artifact finds build outputs that boxd caches outside the source
// tree (the guest kernel, the root image): each is built by a script that can
// print the cached path for the current inputs without building (--print-path).
package artifact

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Path runs script --print-path and returns the absolute path it prints last,
// if that file exists. Any failure wraps notBuilt, so callers can tell "not
// built yet" apart from other errors with errors.Is.
func Path(script string, notBuilt error) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script, "--print-path")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s --print-path: %w: %s", notBuilt, script, err, strings.TrimSpace(stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	path := lines[len(lines)-1]
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s --print-path printed %q, want an absolute path", script, path)
	}
	return path, Exists(path, notBuilt)
}

// Exists checks a cached file; a missing one is an error wrapping notBuilt.
func Exists(path string, notBuilt error) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w (no %s)", notBuilt, path)
		}
		return fmt.Errorf("stat %s: %w", path, err)
	}
	return nil
}

// Script finds a build script: in srcDir (the calling package's source folder,
// when the binary was built from a checkout: go test, e2e), else as rel (such as
// "kernel/build.sh") in the module root at or above the working directory.
func Script(srcDir, rel string) (string, error) {
	if srcDir != "" && filepath.IsAbs(srcDir) {
		p := filepath.Join(srcDir, filepath.Base(rel))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find %s: %w", rel, err)
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found beside the source or above the working directory", rel)
		}
		dir = parent
	}
}
