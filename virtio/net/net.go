package net

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	stdnet "net"
	"sync/atomic"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Device-specific feature bits (virtio 1.2 §5.1.3), as masks.
const (
	FeatureCsum      uint64 = 1 << 0  // VIRTIO_NET_F_CSUM: device takes partial checksums
	FeatureGuestCsum uint64 = 1 << 1  // VIRTIO_NET_F_GUEST_CSUM: driver takes partial checksums
	FeatureMTU       uint64 = 1 << 3  // VIRTIO_NET_F_MTU: mtu in config space
	FeatureMAC       uint64 = 1 << 5  // VIRTIO_NET_F_MAC: mac in config space
	FeatureGuestTSO4 uint64 = 1 << 7  // VIRTIO_NET_F_GUEST_TSO4
	FeatureGuestTSO6 uint64 = 1 << 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureGuestECN  uint64 = 1 << 9  // VIRTIO_NET_F_GUEST_ECN (not offered)
	FeatureGuestUFO  uint64 = 1 << 10 // VIRTIO_NET_F_GUEST_UFO (not offered)
	FeatureHostTSO4  uint64 = 1 << 11 // VIRTIO_NET_F_HOST_TSO4
	FeatureHostTSO6  uint64 = 1 << 12 // VIRTIO_NET_F_HOST_TSO6
	FeatureHostECN   uint64 = 1 << 13 // VIRTIO_NET_F_HOST_ECN (not offered)
	FeatureHostUFO   uint64 = 1 << 14 // VIRTIO_NET_F_HOST_UFO (not offered)
	FeatureMrgRxbuf  uint64 = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF
	FeatureStatus    uint64 = 1 << 16 // VIRTIO_NET_F_STATUS: link status in config space

	// featuresOffload are offered only over an Offloader backend.
	featuresOffload = FeatureCsum | FeatureGuestCsum | FeatureGuestTSO4 |
		FeatureGuestTSO6 | FeatureHostTSO4 | FeatureHostTSO6
)

// Queue indices: one receive/transmit pair, no control queue.
const (
	RxQueue = 0
	TxQueue = 1
)

// Configuration space layout (struct virtio_net_config).
const (
	configMAC    = 0
	configStatus = 6
	configPairs  = 8
	configMTU    = 10
	configLen    = 12

	statusLinkUp = 1 // VIRTIO_NET_S_LINK_UP
)

const (
	// DefaultQueueSize is the size of each queue when Config.QueueSize is 0.
	DefaultQueueSize = 256
	// MaxQueueSize bounds Config.QueueSize: a transmit chain then always
	// fits one writev (IOV_MAX is 1024).
	MaxQueueSize = 1024
	// MinMTU is the smallest MTU the device advertises (IPv4's minimum).
	MinMTU = 68
)

// Config describes a network device.
type Config struct {
	// Backend carries the frames; required. New takes ownership of it on
	// success: Device.Close closes it.
	Backend Backend
	// MAC is the guest's address (VIRTIO_NET_F_MAC); nil picks RandomMAC().
	MAC stdnet.HardwareAddr
	// MTU, if not 0, is advertised to the guest (VIRTIO_NET_F_MTU) as the
	// largest MTU it should use. 0 leaves the guest's default (1500).
	MTU uint16
	// QueueSize is the maximum size of each queue; 0 means DefaultQueueSize.
	// A power of two, at most MaxQueueSize.
	QueueSize uint16
}

// ErrClosed is returned by Activate after Close.
var ErrClosed = errors.New("net: device closed")

// Stats counts a device's traffic and the guest's mistakes; all fields are
// atomic and may be read at any time. Byte counts exclude the header.
type Stats struct {
	RxFrames  atomic.Uint64 // frames delivered to the guest
	RxBytes   atomic.Uint64
	RxDropped atomic.Uint64 // frames read from the backend but not delivered (too big for the guest's buffers, offload it did not accept, malformed, device reset)
	RxInvalid atomic.Uint64 // malformed receive chains, returned unused
	TxFrames  atomic.Uint64 // frames written to the backend
	TxBytes   atomic.Uint64
	TxDropped atomic.Uint64 // frames the backend refused
	TxInvalid atomic.Uint64 // malformed transmit chains or headers, not sent
	// BackendErrors counts failed backend calls other than EAGAIN. A read
	// error or a hang-up stops reception until the device is closed.
	BackendErrors atomic.Uint64
	Interrupts    atomic.Uint64 // used-buffer interrupts raised
}

// RandomMAC returns a random unicast, locally administered MAC address.
func RandomMAC() stdnet.HardwareAddr {
	mac := make(stdnet.HardwareAddr, 6)
	// crypto/rand.Read never fails (Go 1.24+); it panics if the kernel's
	// generator is unavailable.
	_, _ = rand.Read(mac)
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}

func (c *Config) validate() error {
	if c.Backend == nil {
		return errors.New("net: no backend")
	}
	if c.MAC == nil {
		c.MAC = RandomMAC()
	}
	if len(c.MAC) != 6 {
		return fmt.Errorf("net: MAC %v is not 6 bytes", c.MAC)
	}
	if c.MAC[0]&1 != 0 {
		return fmt.Errorf("net: MAC %v is a multicast address", c.MAC)
	}
	if c.MTU != 0 && c.MTU < MinMTU {
		return fmt.Errorf("net: MTU %d below %d", c.MTU, MinMTU)
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueSize > MaxQueueSize || c.QueueSize&(c.QueueSize-1) != 0 {
		return fmt.Errorf("net: queue size %d is not a power of two ≤ %d", c.QueueSize, MaxQueueSize)
	}
	return nil
}

// offered returns the features the device offers for cfg.
func offered(cfg Config) uint64 {
	f := virtio.FeatureVersion1 | queue.Features | FeatureMAC | FeatureStatus | FeatureMrgRxbuf
	if cfg.MTU != 0 {
		f |= FeatureMTU
	}
	if _, ok := cfg.Backend.(Offloader); ok {
		f |= featuresOffload
	}
	return f
}

// checkFeatures enforces the dependencies of virtio 1.2 §5.1.3.1 on what the
// driver accepted; the transport has already checked it is a subset of what
// was offered.
func checkFeatures(f uint64) error {
	if f&(FeatureGuestTSO4|FeatureGuestTSO6) != 0 && f&FeatureGuestCsum == 0 {
		return fmt.Errorf("net: features %#x: GUEST_TSO without GUEST_CSUM", f)
	}
	if f&(FeatureHostTSO4|FeatureHostTSO6) != 0 && f&FeatureCsum == 0 {
		return fmt.Errorf("net: features %#x: HOST_TSO without CSUM", f)
	}
	return nil
}

// rxOffload maps the driver's receive features to backend offloads.
func rxOffload(f uint64) Offload {
	var o Offload
	if f&FeatureGuestCsum != 0 {
		o |= OffloadCsum
		if f&FeatureGuestTSO4 != 0 {
			o |= OffloadTSO4
		}
		if f&FeatureGuestTSO6 != 0 {
			o |= OffloadTSO6
		}
	}
	return o
}

// encodeConfig fills struct virtio_net_config.
func encodeConfig(b []byte, cfg Config, linkUp bool) {
	copy(b[configMAC:], cfg.MAC)
	var status uint16
	if linkUp {
		status = statusLinkUp
	}
	binary.LittleEndian.PutUint16(b[configStatus:], status)
	binary.LittleEndian.PutUint16(b[configPairs:], 1)
	binary.LittleEndian.PutUint16(b[configMTU:], cfg.MTU)
}
