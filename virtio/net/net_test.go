package net

import (
	"bytes"
	"encoding/binary"
	stdnet "net"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

func TestRandomMAC(t *testing.T) {
	seen := map[string]bool{}
	for range 64 {
		m := RandomMAC()
		if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
			t.Fatalf("RandomMAC() = %v: want 6 bytes, unicast, locally administered", m)
		}
		seen[m.String()] = true
	}
	if len(seen) < 60 {
		t.Errorf("64 random MACs gave only %d distinct ones", len(seen))
	}
}

func TestNewValidates(t *testing.T) {
	be, _ := newSockPair(t)
	defer be.Close()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no backend", Config{}, "no backend"},
		{"short MAC", Config{Backend: be, MAC: stdnet.HardwareAddr{2, 0, 0}}, "not 6 bytes"},
		{"multicast MAC", Config{Backend: be, MAC: stdnet.HardwareAddr{3, 0, 0, 0, 0, 1}}, "multicast"},
		{"tiny MTU", Config{Backend: be, MTU: 67}, "MTU 67"},
		{"queue not power of two", Config{Backend: be, QueueSize: 100}, "queue size 100"},
		{"queue too big", Config{Backend: be, QueueSize: 2048}, "queue size 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestFeaturesAndConfig(t *testing.T) {
	mac := stdnet.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	base := virtio.FeatureVersion1 | queue.Features | FeatureMAC | FeatureStatus | FeatureMrgRxbuf
	tests := []struct {
		name     string
		cfg      Config
		offload  bool
		features uint64
		config   []byte
	}{
		{"plain", Config{MAC: mac}, false, base,
			[]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0, 0}},
		{"mtu", Config{MAC: mac, MTU: 9000}, false, base | FeatureMTU,
			[]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0x28, 0x23}},
		{"offloader", Config{MAC: mac}, true, base | featuresOffload,
			[]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newTestDevice(t, tt.cfg, tt.offload)
			if got := d.Features(); got != tt.features {
				t.Errorf("Features() = %#x, want %#x", got, tt.features)
			}
			if d.Type() != virtio.DeviceNet {
				t.Errorf("Type() = %d", d.Type())
			}
			if diff := cmp.Diff([]uint16{DefaultQueueSize, DefaultQueueSize}, d.QueueSizes()); diff != "" {
				t.Errorf("QueueSizes (-want +got):\n%s", diff)
			}
			g := newGuest(t, d, guestOptions{features: ^uint64(0)})
			if diff := cmp.Diff(tt.config, g.g.ReadConfig(0, configLen)); diff != "" {
				t.Errorf("config space (-want +got):\n%s", diff)
			}
			// Byte-wise reads and reads past the end.
			if got := g.g.ReadConfig(4, 1); got[0] != 0x34 {
				t.Errorf("config byte 4 = %#x", got[0])
			}
			if got := g.g.ReadConfig(10, 4); !bytes.Equal(got[2:], []byte{0, 0}) {
				t.Errorf("config past the end = %x", got)
			}
			if !bytes.Equal(d.MAC(), mac) {
				t.Errorf("MAC() = %v", d.MAC())
			}
		})
	}
}

func TestSetLinkUp(t *testing.T) {
	d, _ := newTestDevice(t, Config{}, false)
	g := newGuest(t, d, guestOptions{features: FeatureStatus})
	g.Ack()
	d.SetLinkUp(false)
	if got := binary.LittleEndian.Uint16(g.g.ReadConfig(configStatus, 2)); got != 0 {
		t.Errorf("status after link down = %d", got)
	}
	if cause := g.g.Ack(); cause&virtio.InterruptConfigChange == 0 {
		t.Errorf("interrupt status %#x, want a config change", cause)
	}
	d.SetLinkUp(false) // no change, no interrupt
	if cause := g.g.Ack(); cause != 0 {
		t.Errorf("interrupt status %#x after a no-op", cause)
	}
	d.SetLinkUp(true)
	if got := binary.LittleEndian.Uint16(g.g.ReadConfig(configStatus, 2)); got != statusLinkUp {
		t.Errorf("status after link up = %d", got)
	}
}

func (g *guest) Ack() { g.g.Ack() }

func TestFeatureDependencies(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
	}{
		{"guest TSO without guest csum", FeatureGuestTSO4},
		{"host TSO without csum", FeatureHostTSO6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newTestDevice(t, Config{}, true)
			be := d.backend.(*offloadSock)
			_, err := probeOnly(t, d, tt.features)
			if err == nil {
				t.Fatal("probe succeeded")
			}
			if len(be.set) != 1 || be.set[0] != 0 {
				t.Errorf("SetOffload calls %v, want only the initial 0", be.set)
			}
		})
	}
}

func TestOffloadNegotiation(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		want     Offload
	}{
		{"none", 0, 0},
		{"csum", FeatureGuestCsum, OffloadCsum},
		{"tso", FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6, OffloadCsum | OffloadTSO4 | OffloadTSO6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newTestDevice(t, Config{}, true)
			be := d.backend.(*offloadSock)
			g := newGuest(t, d, guestOptions{features: tt.features})
			g.reset()
			// New, Activate, Reset.
			if diff := cmp.Diff([]Offload{0, tt.want, 0}, be.set); diff != "" {
				t.Errorf("SetOffload calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNotifyAnyTime(t *testing.T) {
	d, _ := newTestDevice(t, Config{}, false)
	d.Notify(0) // before activation
	d.Notify(7) // no such queue
	g := newGuest(t, d, guestOptions{})
	d.Notify(-1)
	g.reset()
	d.Notify(1) // after reset
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d.Notify(0) // after close
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseReleasesDescriptors(t *testing.T) {
	before := openFDs(t)
	for range 3 {
		be, peer := newSockPair(t)
		d, err := New(Config{Backend: be})
		if err != nil {
			t.Fatal(err)
		}
		g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf})
		g.fillRx(4, 2048)
		h := g.send(header(0, 0, 0, 0, 0, 0), testFrame(60, 1))
		g.waitTx(h)
		peerRead(t, peer)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if !g.needsResetOrStopped() {
			t.Error("device still running after Close")
		}
		peer.Close()
	}
	if after := openFDs(t); after != before {
		t.Errorf("open descriptors: %d before, %d after three devices were closed", before, after)
	}
}

// needsResetOrStopped reports that the device no longer serves queues: a
// kick after Close gets no used entry.
func (g *guest) needsResetOrStopped() bool { return !g.dev.running.Load() }

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}
