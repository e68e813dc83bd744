package machine

import (
	"github.com/boxd-dev/boxd/devices"
)

// addLegacyDevices maps the PC devices Linux probes during boot.
func (m *Machine) addLegacyDevices() error {
	// POST code port: written by Linux as an I/O delay.
	return m.PIO.Insert(0x80, 1, devices.Ignore{})
}
