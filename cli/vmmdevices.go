package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/boxd-dev/boxd/virtio/blk"
	"github.com/boxd-dev/boxd/virtio/mmio"
)

// diskSpec is a parsed --disk value.
type diskSpec struct {
	Path     string
	ReadOnly bool
	ID       string
}

// parseDisk parses PATH[,ro][,id=SERIAL].
func parseDisk(s string) (diskSpec, error) {
	parts := strings.Split(s, ",")
	d := diskSpec{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("--disk %q: missing path (want PATH[,ro][,id=SERIAL])", s)
	}
	for _, p := range parts[1:] {
		switch {
		case p == "ro":
			d.ReadOnly = true
		case strings.HasPrefix(p, "id="):
			d.ID = strings.TrimPrefix(p, "id=")
			if len(d.ID) > blk.IDLen {
				return d, fmt.Errorf("--disk %q: id longer than %d bytes", s, blk.IDLen)
			}
		default:
			return d, fmt.Errorf("--disk %q: unknown option %q (want ro or id=SERIAL)", s, p)
		}
	}
	return d, nil
}

// virtioDevices builds the devices the flags ask for, in guest order.
func virtioDevices(f vmmFlags) (devs []mmio.Device, err error) {
	defer func() {
		if err != nil {
			closeDevices(devs)
			devs = nil
		}
	}()
	for _, s := range f.disks {
		d, err := parseDisk(s)
		if err != nil {
			return devs, err
		}
		b, err := blk.OpenFile(d.Path, d.ReadOnly)
		if err != nil {
			return devs, fmt.Errorf("--disk %s: %w", d.Path, err)
		}
		dev, err := blk.New(b, blk.Config{ReadOnly: d.ReadOnly, ID: d.ID})
		if err != nil {
			b.Close()
			return devs, fmt.Errorf("--disk %s: %w", d.Path, err)
		}
		devs = append(devs, dev)
	}
	return devs, nil
}

func closeDevices(devs []mmio.Device) error {
	var errs []error
	for _, d := range devs {
		if c, ok := d.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
