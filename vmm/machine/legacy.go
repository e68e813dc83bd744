package machine

import (
	"github.com/boxd-dev/boxd/devices"
	"github.com/boxd-dev/boxd/devices/boottimer"
	"github.com/boxd-dev/boxd/devices/i8042"
	"github.com/boxd-dev/boxd/devices/rtc"
	"github.com/boxd-dev/boxd/vmm/boot"
)

// addLegacyDevices maps the PC devices Linux probes during boot, the i8042 whose
// reset line ends the VM, and the boot timer.
func (m *Machine) addLegacyDevices() error {
	m.kbd = i8042.New(i8042.Config{Reset: func() {
		m.finish(Result{Kind: Reboot, Detail: "guest reset through the i8042"})
	}})
	if err := m.PIO.Insert(boot.I8042Data, i8042.Size, m.kbd); err != nil {
		return err
	}
	m.cmos = rtc.New(nil)
	if err := m.PIO.Insert(boot.RTCPort, rtc.Size, m.cmos); err != nil {
		return err
	}
	// POST code port: written by Linux as an I/O delay.
	if err := m.PIO.Insert(boot.PortDebug, 1, devices.Ignore{}); err != nil {
		return err
	}
	m.BootTimer = boottimer.New(boottimer.Config{Log: m.cfg.Log})
	return m.MMIO.Insert(boot.BootTimerAddr, boottimer.Size, m.BootTimer)
}
