package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/pierrec/lz4/v4"

	"github.com/boxd-dev/boxd/vmm/boot"
)

// Format constants; docs/snapshot-format.md describes the layout.
const (
	Magic      = "BOXDSNAP"
	Version    = 2  // the format Encode writes
	HeaderSize = 32 // magic, version, flags, body length, body CRC, header CRC

	// FlagLZ4 marks a body stored as an lz4 block behind a 12-byte prefix
	// (uncompressed length, CRC32C of the uncompressed body). Version 2 on.
	FlagLZ4 = 1 << 0

	// MaxBodySize bounds the body as stored and, for a compressed body, as
	// decompressed.
	MaxBodySize   = 256 << 20
	MaxVCPUs      = boot.MaxCPUs
	MaxCPUID      = 256
	MaxMSRs       = 1024
	MinXSave      = 4096
	MaxXSave      = 1 << 20
	MaxDevices    = 256
	MaxNameLen    = 64
	MaxDeviceData = 64 << 20

	lz4Prefix = 12
	// lz4MaxRatio: one lz4 block byte expands to at most 255 bytes (a match
	// length continuation byte), so a block claiming more is lying and is
	// refused before its buffer is allocated.
	lz4MaxRatio = 255
)

// ErrFormat is wrapped by every error Decode returns for bytes that are not a
// valid snapshot (foreign, truncated, corrupt or from an unknown version).
var ErrFormat = errors.New("snapshot: invalid state file")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode returns the file form of s, uncompressed. It checks s against the
// same limits Decode enforces, so whatever Encode writes Decode reads.
func Encode(s *State) ([]byte, error) { return encode(s, false) }

// EncodeCompressed is Encode with the body compressed by lz4 (for state
// files written to storage). A body lz4 cannot shrink is stored as is, with
// the flag clear.
func EncodeCompressed(s *State) ([]byte, error) { return encode(s, true) }

func encode(s *State, compress bool) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("snapshot: encode: %w", err)
	}
	body := encodeBody(s)
	if len(body) > MaxBodySize {
		return nil, fmt.Errorf("snapshot: encode: body of %d bytes exceeds %d", len(body), MaxBodySize)
	}
	var flags uint32
	if compress {
		z := make([]byte, lz4Prefix+lz4.CompressBlockBound(len(body)))
		n, err := lz4.CompressBlock(body, z[lz4Prefix:], nil)
		if err != nil {
			return nil, fmt.Errorf("snapshot: encode: lz4: %w", err)
		}
		if n > 0 && lz4Prefix+n < len(body) {
			binary.LittleEndian.PutUint64(z, uint64(len(body)))
			binary.LittleEndian.PutUint32(z[8:], crc32.Checksum(body, castagnoli))
			body, flags = z[:lz4Prefix+n], FlagLZ4
		}
	}
	out := make([]byte, HeaderSize, HeaderSize+len(body))
	copy(out, Magic)
	le := binary.LittleEndian
	le.PutUint32(out[8:], Version)
	le.PutUint32(out[12:], flags)
	le.PutUint64(out[16:], uint64(len(body)))
	le.PutUint32(out[24:], crc32.Checksum(body, castagnoli))
	le.PutUint32(out[28:], crc32.Checksum(out[:28], castagnoli))
	return append(out, body...), nil
}

// encodeBody writes the current version's body (version 2).
func encodeBody(s *State) []byte {
	var w bytes.Buffer
	put := func(v any) { binary.Write(&w, binary.LittleEndian, v) } // writes to a bytes.Buffer cannot fail
	put(s.MemSize)
	put(s.SavedAt)
	put(uint32(len(s.VCPUs)))
	for i := range s.VCPUs {
		c := &s.VCPUs[i]
		put(c.ID)
		put(uint32(len(c.CPUID)))
		put(c.CPUID)
		put(c.Regs)
		put(c.Sregs)
		put(c.FPU)
		put(uint32(len(c.XSave)))
		w.Write(c.XSave)
		put(c.XCRs)
		put(uint32(len(c.MSRs)))
		put(c.MSRs)
		put(c.LAPIC)
		put(c.Events)
		put(c.DebugRegs)
		put(c.MPState)
		put(c.TSCKHz)
	}
	put(s.VM.PICMaster)
	put(s.VM.PICSlave)
	put(s.VM.IOAPIC)
	put(s.VM.PIT)
	put(s.VM.Clock)
	put(uint32(len(s.Devices)))
	for _, d := range s.Devices {
		put(uint16(len(d.Name)))
		w.WriteString(d.Name)
		put(uint32(len(d.Data)))
		w.Write(d.Data)
	}
	return w.Bytes()
}

// Write encodes s to w, uncompressed.
func Write(w io.Writer, s *State) error { return write(w, s, false) }

// WriteCompressed encodes s to w with an lz4 body.
func WriteCompressed(w io.Writer, s *State) error { return write(w, s, true) }

func write(w io.Writer, s *State, compress bool) error {
	b, err := encode(s, compress)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("snapshot: write: %w", err)
	}
	return nil
}

// Read reads one state file from r. The header is checked before the body is
// read, so a foreign or corrupt header never makes Read allocate a large body.
func Read(r io.Reader) (*State, error) {
	hdr := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	h, err := checkHeader(hdr)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, HeaderSize+h.length)
	copy(buf, hdr)
	if _, err := io.ReadFull(r, buf[HeaderSize:]); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrFormat, err)
	}
	return Decode(buf)
}

// header is a checked file header.
type header struct {
	version, flags uint32
	length         int // body bytes as stored
}

func checkHeader(h []byte) (header, error) {
	if len(h) < HeaderSize {
		return header{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrFormat, len(h), HeaderSize)
	}
	if string(h[:8]) != Magic {
		return header{}, fmt.Errorf("%w: bad magic %q (not a boxd snapshot)", ErrFormat, h[:8])
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(h[28:]), crc32.Checksum(h[:28], castagnoli); got != want {
		return header{}, fmt.Errorf("%w: header checksum %#x, want %#x", ErrFormat, got, want)
	}
	v, f := le.Uint32(h[8:]), le.Uint32(h[12:])
	switch {
	case v < 1 || v > Version:
		return header{}, fmt.Errorf("%w: format version %d, this build reads versions 1..%d", ErrFormat, v, Version)
	case v == 1 && f != 0, v == 2 && f&^FlagLZ4 != 0:
		return header{}, fmt.Errorf("%w: unknown flags %#x for version %d", ErrFormat, f, v)
	}
	n := le.Uint64(h[16:])
	if n > MaxBodySize {
		return header{}, fmt.Errorf("%w: body length %d exceeds %d", ErrFormat, n, MaxBodySize)
	}
	return header{version: v, flags: f, length: int(n)}, nil
}

// Decode parses and validates a state file of any version this build reads.
func Decode(b []byte) (*State, error) {
	h, err := checkHeader(b)
	if err != nil {
		return nil, err
	}
	body := b[HeaderSize:]
	if len(body) != h.length {
		return nil, fmt.Errorf("%w: body is %d bytes, header says %d", ErrFormat, len(body), h.length)
	}
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(b[24:]); got != want {
		return nil, fmt.Errorf("%w: body checksum %#x, want %#x (corrupt file)", ErrFormat, got, want)
	}
	if h.flags&FlagLZ4 != 0 {
		if body, err = uncompress(body); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFormat, err)
		}
	}
	s, err := decodeBody(body, h.version)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return s, nil
}

// uncompress checks a compressed body's claimed length against MaxBodySize
// and what its block could possibly expand to before allocating it, and its
// checksum after.
func uncompress(z []byte) ([]byte, error) {
	if len(z) < lz4Prefix {
		return nil, fmt.Errorf("compressed body of %d bytes, shorter than its %d-byte prefix", len(z), lz4Prefix)
	}
	le := binary.LittleEndian
	n, sum, block := le.Uint64(z), le.Uint32(z[8:]), z[lz4Prefix:]
	if n > MaxBodySize || n > lz4MaxRatio*uint64(len(block)) {
		return nil, fmt.Errorf("compressed body claims %d bytes from a %d-byte lz4 block (limit %d)", n, len(block), min(MaxBodySize, lz4MaxRatio*uint64(len(block))))
	}
	out := make([]byte, n)
	got, err := lz4.UncompressBlock(block, out)
	if err != nil {
		return nil, fmt.Errorf("lz4: %w", err)
	}
	if uint64(got) != n {
		return nil, fmt.Errorf("lz4 block holds %d bytes, prefix says %d", got, n)
	}
	if c := crc32.Checksum(out, castagnoli); c != sum {
		return nil, fmt.Errorf("uncompressed body checksum %#x, want %#x", c, sum)
	}
	return out, nil
}
