package blk

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Feature bits (virtio 1.2 §5.2.3).
const (
	FeatureSizeMax     uint64 = 1 << 1
	FeatureSegMax      uint64 = 1 << 2
	FeatureRO          uint64 = 1 << 5
	FeatureBlkSize     uint64 = 1 << 6
	FeatureFlush       uint64 = 1 << 9
	FeatureDiscard     uint64 = 1 << 13
	FeatureWriteZeroes uint64 = 1 << 14
)

// Request types and status values (§5.2.6).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeGetLifetime = 10
	TypeDiscard     = 11
	TypeWriteZeroes = 13
	TypeSecureErase = 14

	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

const (
	// SectorSize is the unit of every sector number and count.
	SectorSize = 512
	// IDLen is the length of the GET_ID string.
	IDLen = 20
	// DefaultQueueSize is the request queue size offered when Config leaves
	// it zero.
	DefaultQueueSize = 256
	// SizeMax is the largest single data segment the device advertises.
	SizeMax = 1 << 20
	// MaxDiscardSectors bounds one discard or write-zeroes segment (4 GiB):
	// hole punching makes large ranges cheap, the bound keeps one request
	// from running for long on a backend that has to write zeros.
	MaxDiscardSectors = 1 << 23
	// MaxDiscardSeg bounds the segments of one discard or write-zeroes
	// request.
	MaxDiscardSeg = 32

	headerLen  = 16
	segmentLen = 16 // struct virtio_blk_discard_write_zeroes
	unmapFlag  = 1
	configLen  = 60 // through write_zeroes_may_unmap and its padding
)

// Config describes a disk.
type Config struct {
	// ReadOnly offers VIRTIO_BLK_F_RO: every write fails with IOERR.
	ReadOnly bool
	// ID is the GET_ID string (at most 20 bytes), e.g. a serial the guest
	// finds in /sys/block/vda/serial.
	ID string
	// QueueSize is the request queue's maximum size (power of two, 4..32768);
	// 0 means DefaultQueueSize.
	QueueSize uint16
}

func (c *Config) validate() error {
	if len(c.ID) > IDLen {
		return fmt.Errorf("blk: ID %q longer than %d bytes", c.ID, IDLen)
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueSize < 4 || c.QueueSize > queue.MaxSize || c.QueueSize&(c.QueueSize-1) != 0 {
		return fmt.Errorf("blk: queue size %d not a power of two in [4, %d]", c.QueueSize, queue.MaxSize)
	}
	return nil
}

// features returns what the device offers for this backend and config.
func features(b Backend, c Config) uint64 {
	f := virtio.FeatureVersion1 | queue.Features | FeatureSegMax | FeatureSizeMax | FeatureFlush
	if c.ReadOnly {
		return f | FeatureRO
	}
	f |= FeatureWriteZeroes
	if _, ok := b.(Discarder); ok {
		f |= FeatureDiscard
	}
	return f
}

// encodeConfig lays out struct virtio_blk_config.
func encodeConfig(capacity uint64, c Config, offered uint64) []byte {
	b := make([]byte, configLen)
	le := binary.LittleEndian
	le.PutUint64(b[0:], capacity)
	le.PutUint32(b[8:], SizeMax)
	// Two descriptors carry the header and the status byte.
	le.PutUint32(b[12:], uint32(c.QueueSize)-2)
	if offered&FeatureDiscard != 0 {
		le.PutUint32(b[36:], MaxDiscardSectors)
		le.PutUint32(b[40:], MaxDiscardSeg)
		le.PutUint32(b[44:], 4096/SectorSize) // discard_sector_alignment: a page
	}
	if offered&FeatureWriteZeroes != 0 {
		le.PutUint32(b[48:], MaxDiscardSectors)
		le.PutUint32(b[52:], MaxDiscardSeg)
		if offered&FeatureDiscard != 0 {
			b[56] = 1 // write_zeroes_may_unmap
		}
	}
	return b
}
