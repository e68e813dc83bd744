package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// The copy-on-write overlay format (docs/disk-format.md has the full
// description and its crash-safety argument). An overlay file is
//
//	[0, 4096)              header
//	[4096, dataOffset)     allocation bitmap: 2 bits per cluster
//	[dataOffset, +size)    data: cluster i at dataOffset + i*clusterSize
//
// Data sits at a fixed place per cluster, so the file is as sparse as the
// guest's writes, no allocation table is needed, and discarding a cluster
// punches a hole at a known place. All integers are little endian.
const (
	cowMagic        = "BOXDCOW\x00"
	cowVersion      = 1
	cowHeaderSize   = 4096
	cowMaxPath      = 1024
	cowMinClusterSh = 12 // 4 KiB
	cowMaxClusterSh = 24 // 16 MiB
	// CowDefaultClusterSize balances copy-up cost (a first partial write
	// copies a whole cluster) against the bitmap's size (400 KiB for 100 GB).
	CowDefaultClusterSize = 64 << 10
	// cowMaxSize bounds the virtual size so that offsets never overflow.
	cowMaxSize = 1 << 56
	// cowMaxDepth bounds a chain of overlays.
	cowMaxDepth = 16
)

// Header field offsets.
const (
	hMagic      = 0
	hVersion    = 8
	hHeaderSize = 12
	hClusterSh  = 16
	hFlags      = 20
	hSize       = 24
	hBaseSize   = 32
	hBaseMtime  = 40
	hBitmapOff  = 48
	hBitmapLen  = 56
	hDataOff    = 64
	hPathLen    = 72
	hPath       = 74
	hCRC        = cowHeaderSize - 4
)

// cowFlagFrozen marks an overlay that other overlays use as their base: it
// never changes again and opens read-only.
const cowFlagFrozen = 1 << 0

// Cluster states, 2 bits each in the bitmap.
const (
	clusterBase = 0 // read from the base (zeros past its end)
	clusterData = 1 // read from the overlay's data area
	clusterZero = 2 // reads as zeros
	// 3 is invalid: the file is corrupt.
)

// ErrCorrupt is wrapped by the errors of an overlay that fails validation.
var ErrCorrupt = errors.New("corrupt copy-on-write overlay")

// ErrBaseChanged is wrapped by the error of an overlay whose base is not
// the file it was created on (size or modification time differ): reading
// through it would mix two different disks.
var ErrBaseChanged = errors.New("base image changed since the overlay was created")

// cowHeader is an overlay's header as plain data.
type cowHeader struct {
	clusterShift uint32
	flags        uint32
	size         int64 // virtual disk size
	baseSize     int64
	baseMtime    int64 // nanoseconds since the epoch
	bitmapOff    int64
	bitmapLen    int64
	dataOff      int64
	basePath     string
}

func (h *cowHeader) clusterSize() int64 { return 1 << h.clusterShift }

func (h *cowHeader) clusters() int64 {
	return (h.size + h.clusterSize() - 1) >> h.clusterShift
}

// layout fills in the offsets that follow from the size and cluster size.
func (h *cowHeader) layout() {
	h.bitmapOff = cowHeaderSize
	bits := (h.clusters()*2 + 7) / 8
	h.bitmapLen = alignUp(bits, cowHeaderSize)
	h.dataOff = alignUp(h.bitmapOff+h.bitmapLen, h.clusterSize())
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }

func (h *cowHeader) marshal() []byte {
	b := make([]byte, cowHeaderSize)
	copy(b[hMagic:], cowMagic)
	le := binary.LittleEndian
	le.PutUint32(b[hVersion:], cowVersion)
	le.PutUint32(b[hHeaderSize:], cowHeaderSize)
	le.PutUint32(b[hClusterSh:], h.clusterShift)
	le.PutUint32(b[hFlags:], h.flags)
	le.PutUint64(b[hSize:], uint64(h.size))
	le.PutUint64(b[hBaseSize:], uint64(h.baseSize))
	le.PutUint64(b[hBaseMtime:], uint64(h.baseMtime))
	le.PutUint64(b[hBitmapOff:], uint64(h.bitmapOff))
	le.PutUint64(b[hBitmapLen:], uint64(h.bitmapLen))
	le.PutUint64(b[hDataOff:], uint64(h.dataOff))
	le.PutUint16(b[hPathLen:], uint16(len(h.basePath)))
	copy(b[hPath:], h.basePath)
	le.PutUint32(b[hCRC:], crc32.Checksum(b[:hCRC], castagnoli))
	return b
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// isCOW reports whether b starts like an overlay.
func isCOW(b []byte) bool { return len(b) >= len(cowMagic) && string(b[:len(cowMagic)]) == cowMagic }

// parseCOWHeader validates and decodes an overlay header. Every field is
// checked, since the file is input like any other: a header that passes
// describes a layout whose offsets cannot overflow.
func parseCOWHeader(b []byte) (*cowHeader, error) {
	if len(b) < cowHeaderSize {
		return nil, fmt.Errorf("header is %d bytes, want %d: %w", len(b), cowHeaderSize, ErrCorrupt)
	}
	if !isCOW(b) {
		return nil, fmt.Errorf("bad magic %q: %w", b[:len(cowMagic)], ErrCorrupt)
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[hVersion:]); v != cowVersion {
		return nil, fmt.Errorf("version %d, this build reads %d: %w", v, cowVersion, ErrCorrupt)
	}
	if got, want := le.Uint32(b[hCRC:]), crc32.Checksum(b[:hCRC], castagnoli); got != want {
		return nil, fmt.Errorf("header checksum %#x, want %#x: %w", got, want, ErrCorrupt)
	}
	if hs := le.Uint32(b[hHeaderSize:]); hs != cowHeaderSize {
		return nil, fmt.Errorf("header size %d: %w", hs, ErrCorrupt)
	}
	h := &cowHeader{
		clusterShift: le.Uint32(b[hClusterSh:]),
		flags:        le.Uint32(b[hFlags:]),
	}
	if h.clusterShift < cowMinClusterSh || h.clusterShift > cowMaxClusterSh {
		return nil, fmt.Errorf("cluster shift %d: %w", h.clusterShift, ErrCorrupt)
	}
	if h.flags&^cowFlagFrozen != 0 {
		return nil, fmt.Errorf("unknown flags %#x: %w", h.flags, ErrCorrupt)
	}
	size, baseSize := le.Uint64(b[hSize:]), le.Uint64(b[hBaseSize:])
	if size == 0 || size%SectorSize != 0 || size > cowMaxSize || baseSize > cowMaxSize {
		return nil, fmt.Errorf("size %d, base size %d: %w", size, baseSize, ErrCorrupt)
	}
	h.size, h.baseSize = int64(size), int64(baseSize)
	h.baseMtime = int64(le.Uint64(b[hBaseMtime:]))
	n := int(le.Uint16(b[hPathLen:]))
	if n == 0 || n > cowMaxPath {
		return nil, fmt.Errorf("base path length %d: %w", n, ErrCorrupt)
	}
	h.basePath = string(b[hPath : hPath+n])
	for _, c := range b[hPath+n : hCRC] {
		if c != 0 {
			return nil, fmt.Errorf("nonzero bytes after the base path: %w", ErrCorrupt)
		}
	}
	for _, c := range []byte(h.basePath) {
		if c == 0 {
			return nil, fmt.Errorf("NUL in base path: %w", ErrCorrupt)
		}
	}
	want := *h
	want.layout()
	if le.Uint64(b[hBitmapOff:]) != uint64(want.bitmapOff) || le.Uint64(b[hBitmapLen:]) != uint64(want.bitmapLen) ||
		le.Uint64(b[hDataOff:]) != uint64(want.dataOff) {
		return nil, fmt.Errorf("layout does not match size %d and cluster size %d: %w", h.size, h.clusterSize(), ErrCorrupt)
	}
	return &want, nil
}

// bitmap holds 2 bits per cluster, packed four to a byte, lowest bits
// first: the same bytes as on disk.
type bitmap []byte

func (m bitmap) get(i int64) byte { return m[i>>2] >> ((i & 3) * 2) & 3 }

func (m bitmap) set(i int64, s byte) {
	sh := (i & 3) * 2
	m[i>>2] = m[i>>2]&^(3<<sh) | s<<sh
}

// validate checks every state and that the bits past the last cluster are
// zero.
func (m bitmap) validate(clusters int64) error {
	for i, b := range m {
		// A pair of set bits is state 3.
		if b&(b>>1)&0x55 != 0 {
			return fmt.Errorf("a cluster near %d has state 3: %w", i*4, ErrCorrupt)
		}
	}
	for i := clusters; i < int64(len(m))*4; i++ {
		if m.get(i) != 0 {
			return fmt.Errorf("bitmap bits set past the last cluster: %w", ErrCorrupt)
		}
	}
	return nil
}
