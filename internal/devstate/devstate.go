// Package devstate is the framing every device's snapshot blob shares: a
// little-endian uint16 version, then the device's own fields. Blobs come
// from snapshot files, so they are untrusted; Check is the first thing a
// device's decoder calls.
package devstate

import (
	"encoding/binary"
	"fmt"
)

// Check reports whether b starts with version and is exactly n bytes long.
func Check(b []byte, version uint16, n int) error {
	if err := checkVersion(b, version); err != nil {
		return err
	}
	if len(b) != n {
		return fmt.Errorf("state of %d bytes, want %d", len(b), n)
	}
	return nil
}

// CheckMin reports whether b starts with version and is at least n bytes
// long (a fixed part followed by variable data).
func CheckMin(b []byte, version uint16, n int) error {
	if err := checkVersion(b, version); err != nil {
		return err
	}
	if len(b) < n {
		return fmt.Errorf("state of %d bytes, want at least %d", len(b), n)
	}
	return nil
}

func checkVersion(b []byte, version uint16) error {
	if len(b) < 2 {
		return fmt.Errorf("state of %d bytes is too short", len(b))
	}
	if v := binary.LittleEndian.Uint16(b); v != version {
		return fmt.Errorf("unknown state version %d (want %d)", v, version)
	}
	return nil
}
