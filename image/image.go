package image

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/boxd-dev/boxd/internal/artifact"
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
	return artifact.Path(script, ErrNotBuilt)
}

// buildScript finds image/build.sh: beside this source file when the binary
// was built from a checkout, else in the module root above the working
// directory.
func buildScript() (string, error) {
	var src string
	if _, file, _, ok := runtime.Caller(0); ok {
		src = filepath.Dir(file)
	}
	return artifact.Script(src, "image/build.sh")
}
