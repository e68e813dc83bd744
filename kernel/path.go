package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrNotBuilt reports that no cached kernel matches the current fragment.
var ErrNotBuilt = errors.New("guest kernel not built: run make kernel")

// Path returns the cached vmlinux (ELF, PVH entry) built from this tree's
// guest.config. It never builds: without a matching kernel the error wraps ErrNotBuilt.
func Path() (string, error) {
	script, err := buildScript()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotBuilt, err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script, "--print-path")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s --print-path: %w: %s", ErrNotBuilt, script, err, strings.TrimSpace(stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	path := lines[len(lines)-1]
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s --print-path printed %q, want an absolute path", script, path)
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w (no %s)", ErrNotBuilt, path)
		}
		return "", fmt.Errorf("stat guest kernel: %w", err)
	}
	return path, nil
}

// BzImagePath returns the cached bzImage (Linux boot protocol) built with the
// vmlinux that Path returns.
func BzImagePath() (string, error) {
	vmlinux, err := Path()
	if err != nil {
		return "", err
	}
	path := filepath.Join(filepath.Dir(vmlinux), "bzImage")
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w (no %s)", ErrNotBuilt, path)
		}
		return "", fmt.Errorf("stat guest kernel: %w", err)
	}
	return path, nil
}

// buildScript finds kernel/build.sh: beside this source file when the binary was
// built from a checkout (go test, e2e), else in the module root above the working
// directory.
func buildScript() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find kernel/build.sh: %w", err)
	}
	for {
		p := filepath.Join(dir, "kernel", "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kernel/build.sh not found beside the source or above the working directory")
		}
		dir = parent
	}
}
