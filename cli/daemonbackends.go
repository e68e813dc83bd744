package cli

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/host/network"
	"github.com/boxd-dev/boxd/host/storage"
)

// realBackends builds host/network (unless --network none) and host/storage,
// both keeping their state under the daemon's state directory.
func realBackends(f daemonFlags) (daemon.Network, daemon.Storage, error) {
	st, err := storage.New(storage.Config{Dir: filepath.Join(f.stateDir, "disks"), Image: f.image, Mode: storage.Mode(f.diskMode)})
	if err != nil {
		return nil, nil, err
	}
	if f.network == "none" {
		return nil, st, nil
	}
	dir := filepath.Join(f.stateDir, "network")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	cfg := network.Config{StateDir: dir, Bridge: f.bridge}
	if f.subnet != "" {
		p, err := netip.ParsePrefix(f.subnet)
		if err != nil {
			return nil, nil, fmt.Errorf("--subnet: %w", err)
		}
		cfg.Subnet = p
	}
	nw, err := network.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return nw, st, nil
}
