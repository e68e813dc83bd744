package kernel

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/boxd-dev/boxd/internal/artifact"
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
	return artifact.Path(script, ErrNotBuilt)
}

// BzImagePath returns the cached bzImage (Linux boot protocol) built with the
// vmlinux that Path returns.
func BzImagePath() (string, error) {
	vmlinux, err := Path()
	if err != nil {
		return "", err
	}
	path := filepath.Join(filepath.Dir(vmlinux), "bzImage")
	return path, artifact.Exists(path, ErrNotBuilt)
}

// buildScript finds kernel/build.sh: beside this source file when the binary was
// built from a checkout (go test, e2e), else in the module root above the working
// directory.
func buildScript() (string, error) {
	var src string
	if _, file, _, ok := runtime.Caller(0); ok {
		src = filepath.Dir(file)
	}
	return artifact.Script(src, "kernel/build.sh")
}
