package image

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

// ErrNotBuilt reports that no cached image matches this tree's build script.
var ErrNotBuilt = errors.New("root image not built: run make image")

// Path returns the cached rootfs.ext4 for this tree's build.sh and the
// current environment (BOXD_IMAGE_SIZE, BOXD_IMAGE_PACKAGES, BOXD_CACHE). It
// never builds: without a matching image the error wraps ErrNotBuilt.
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
		return "", fmt.Errorf("stat root image: %w", err)
	}
	return path, nil
}

// buildScript finds image/build.sh: beside this source file when the binary
// was built from a checkout, else in the module root above the working
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
		return "", fmt.Errorf("find image/build.sh: %w", err)
	}
	for {
		p := filepath.Join(dir, "image", "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("image/build.sh not found beside the source or above the working directory")
		}
		dir = parent
	}
}
