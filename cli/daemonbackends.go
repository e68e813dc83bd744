package cli

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/host/network"
)

// realBackends builds host/network (unless --network none) and host/storage.
func realBackends(f daemonFlags) (daemon.Network, daemon.Storage, error) {
	var nw daemon.Network
	if f.network == "bridge" {
		dir := filepath.Join(f.stateDir, "network")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, err
		}
		cfg := network.Config{StateDir: dir, Bridge: f.bridge}
		if f.subnet != "" {
			cfg.Subnet = netip.MustParsePrefix(f.subnet) // checked by runDaemon
		}
		m, err := network.New(cfg)
		if err != nil {
			return nil, nil, err
		}
		nw = m
	}
	return nw, nil, errors.New("storage: host/storage is not wired yet")
}
