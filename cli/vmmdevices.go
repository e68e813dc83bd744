package cli

import (
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"strconv"
	"strings"

	"github.com/boxd-dev/boxd/virtio/blk"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/net"
	"github.com/boxd-dev/boxd/virtio/vsock"
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

// netSpec is a parsed --net value.
type netSpec struct {
	TAP string
	MAC stdnet.HardwareAddr
	MTU uint16
}

// parseNet parses tap=NAME[,mac=MAC][,mtu=N].
func parseNet(s string) (netSpec, error) {
	var n netSpec
	for _, p := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "tap":
			n.TAP = v
		case "mac":
			mac, err := stdnet.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return n, fmt.Errorf("--net %q: bad mac %q (want aa:bb:cc:dd:ee:ff)", s, v)
			}
			n.MAC = mac
		case "mtu":
			mtu, err := strconv.ParseUint(v, 10, 16)
			if err != nil || mtu < 68 {
				return n, fmt.Errorf("--net %q: bad mtu %q (want 68..65535)", s, v)
			}
			n.MTU = uint16(mtu)
		default:
			return n, fmt.Errorf("--net %q: unknown option %q (want tap=NAME[,mac=M][,mtu=N])", s, k)
		}
	}
	if n.TAP == "" || len(n.TAP) > 15 {
		return n, fmt.Errorf("--net %q: want tap=NAME with a 1-15 character interface name", s)
	}
	return n, nil
}

// vsockSpec is a parsed --vsock value.
type vsockSpec struct {
	CID  uint64
	Path string
}

// parseVsock parses cid=N,path=PATH.
func parseVsock(s string) (vsockSpec, error) {
	var v vsockSpec
	for _, p := range strings.Split(s, ",") {
		k, val, _ := strings.Cut(p, "=")
		switch k {
		case "cid":
			cid, err := strconv.ParseUint(val, 10, 32)
			if err != nil || cid < 3 || cid == 1<<32-1 {
				return v, fmt.Errorf("--vsock %q: bad cid %q (want 3..4294967294)", s, val)
			}
			v.CID = cid
		case "path":
			v.Path = val
		default:
			return v, fmt.Errorf("--vsock %q: unknown option %q (want cid=N,path=PATH)", s, k)
		}
	}
	if v.CID == 0 || v.Path == "" {
		return v, fmt.Errorf("--vsock %q: want cid=N,path=PATH", s)
	}
	return v, nil
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
		b, err := blk.OpenDisk(d.Path, d.ReadOnly)
		if err != nil {
			return devs, fmt.Errorf("--disk %s: %w", d.Path, err)
		}
		dev, err := blk.New(b, blk.Config{ReadOnly: d.ReadOnly, ID: d.ID})
		if err != nil {
			if c, ok := b.(io.Closer); ok {
				c.Close()
			}
			return devs, fmt.Errorf("--disk %s: %w", d.Path, err)
		}
		devs = append(devs, dev)
	}
	for _, s := range f.nets {
		n, err := parseNet(s)
		if err != nil {
			return devs, err
		}
		tap, err := net.OpenTAP(n.TAP)
		if err != nil {
			return devs, fmt.Errorf("--net %s: %w", s, err)
		}
		dev, err := net.New(net.Config{Backend: tap, MAC: n.MAC, MTU: n.MTU})
		if err != nil {
			tap.Close()
			return devs, fmt.Errorf("--net %s: %w", s, err)
		}
		devs = append(devs, dev)
	}
	if f.vsock != "" {
		v, err := parseVsock(f.vsock)
		if err != nil {
			return devs, err
		}
		dev, err := vsock.New(vsock.Config{GuestCID: v.CID, UDSPath: v.Path})
		if err != nil {
			return devs, fmt.Errorf("--vsock: %w", err)
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
