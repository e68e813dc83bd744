package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/boxd-dev/boxd/vmm/boot"
)

// Format constants; docs/snapshot-format.md describes the layout.
const (
	Magic      = "BOXDSNAP"
	Version    = 1  // the format Encode writes
	HeaderSize = 32 // magic, version, flags, body length, body CRC, header CRC

	MaxBodySize   = 256 << 20
	MaxVCPUs      = boot.MaxCPUs
	MaxCPUID      = 256
	MaxMSRs       = 1024
	MinXSave      = 4096
	MaxXSave      = 1 << 20
	MaxDevices    = 256
	MaxNameLen    = 64
	MaxDeviceData = 64 << 20
)

// ErrFormat is wrapped by every error Decode returns for bytes that are not a
// valid snapshot (foreign, truncated, corrupt or from an unknown version).
var ErrFormat = errors.New("snapshot: invalid state file")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode returns the file form of s. It checks s against the same limits
// Decode enforces, so whatever Encode writes Decode reads.
func Encode(s *State) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("snapshot: encode: %w", err)
	}
	var w bytes.Buffer
	put := func(v any) { binary.Write(&w, binary.LittleEndian, v) } // writes to a bytes.Buffer cannot fail
	put(s.MemSize)
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
	body := w.Bytes()
	if len(body) > MaxBodySize {
		return nil, fmt.Errorf("snapshot: encode: body of %d bytes exceeds %d", len(body), MaxBodySize)
	}
	out := make([]byte, HeaderSize, HeaderSize+len(body))
	copy(out, Magic)
	le := binary.LittleEndian
	le.PutUint32(out[8:], Version)
	le.PutUint32(out[12:], 0) // flags: none defined in version 1
	le.PutUint64(out[16:], uint64(len(body)))
	le.PutUint32(out[24:], crc32.Checksum(body, castagnoli))
	le.PutUint32(out[28:], crc32.Checksum(out[:28], castagnoli))
	return append(out, body...), nil
}

// Write encodes s to w.
func Write(w io.Writer, s *State) error {
	b, err := Encode(s)
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
	n, err := checkHeader(hdr)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, HeaderSize+n)
	copy(buf, hdr)
	if _, err := io.ReadFull(r, buf[HeaderSize:]); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrFormat, err)
	}
	return Decode(buf)
}

func checkHeader(h []byte) (int, error) {
	if len(h) < HeaderSize {
		return 0, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrFormat, len(h), HeaderSize)
	}
	if string(h[:8]) != Magic {
		return 0, fmt.Errorf("%w: bad magic %q (not a boxd snapshot)", ErrFormat, h[:8])
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(h[28:]), crc32.Checksum(h[:28], castagnoli); got != want {
		return 0, fmt.Errorf("%w: header checksum %#x, want %#x", ErrFormat, got, want)
	}
	if v := le.Uint32(h[8:]); v != Version {
		return 0, fmt.Errorf("%w: format version %d, this build reads version %d", ErrFormat, v, Version)
	}
	if f := le.Uint32(h[12:]); f != 0 {
		return 0, fmt.Errorf("%w: unknown flags %#x", ErrFormat, f)
	}
	n := le.Uint64(h[16:])
	if n > MaxBodySize {
		return 0, fmt.Errorf("%w: body length %d exceeds %d", ErrFormat, n, MaxBodySize)
	}
	return int(n), nil
}

// Decode parses and validates a state file.
func Decode(b []byte) (*State, error) {
	n, err := checkHeader(b)
	if err != nil {
		return nil, err
	}
	body := b[HeaderSize:]
	if len(body) != n {
		return nil, fmt.Errorf("%w: body is %d bytes, header says %d", ErrFormat, len(body), n)
	}
	if got, want := crc32.Checksum(body, castagnoli), binary.LittleEndian.Uint32(b[24:]); got != want {
		return nil, fmt.Errorf("%w: body checksum %#x, want %#x (corrupt file)", ErrFormat, got, want)
	}
	s, err := decodeBody(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return s, nil
}
