package blk

import (
	"errors"
	"strings"
)

// CowPrefix starts a disk spec that names a copy-on-write overlay.
const CowPrefix = "cow:"

// OpenDisk opens the disk a spec names: "cow:PATH" is the overlay at PATH
// (its header names its base), anything else the raw file or block device
// at that path. This is the syntax of boxd vmm --disk and of the paths
// host/storage hands out.
func OpenDisk(spec string, readOnly bool) (Backend, error) {
	if path, ok := strings.CutPrefix(spec, CowPrefix); ok {
		if path == "" {
			return nil, errors.New("blk: disk spec \"cow:\" names no overlay")
		}
		return OpenCOW(path, readOnly)
	}
	if spec == "" {
		return nil, errors.New("blk: empty disk spec")
	}
	return OpenFile(spec, readOnly)
}
