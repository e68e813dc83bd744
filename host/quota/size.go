package quota

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Units of ParseSize.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

// ErrSize is wrapped by every size syntax error.
var ErrSize = errors.New("invalid size")

// ParseSize parses a size with a binary unit: "512M", "8G", "1.5G", "100GiB",
// "2T", "4096K". The unit is required: a bare number is ambiguous between
// bytes and MiB, and guessing wrong is worse than asking. Case is ignored.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "IB")
	t = strings.TrimSuffix(t, "B")
	if t == "" {
		return 0, fmt.Errorf("%w %q: want a number and a unit, like 512M or 8G", ErrSize, s)
	}
	var unit int64
	switch t[len(t)-1] {
	case 'K':
		unit = KiB
	case 'M':
		unit = MiB
	case 'G':
		unit = GiB
	case 'T':
		unit = TiB
	default:
		return 0, fmt.Errorf("%w %q: a unit is required (K, M, G or T, binary), like 512M or 8G", ErrSize, s)
	}
	num := t[:len(t)-1]
	if !plainNumber(num) {
		return 0, fmt.Errorf("%w %q: want a plain number before the unit, like 512M or 8G", ErrSize, s)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/unit {
			return 0, fmt.Errorf("%w %q: too large", ErrSize, s)
		}
		return n * unit, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%w %q: want a number and a unit, like 512M or 8G", ErrSize, s)
	}
	b := f * float64(unit)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("%w %q: too large", ErrSize, s)
	}
	if b != math.Trunc(b) {
		return 0, fmt.Errorf("%w %q: not a whole number of bytes", ErrSize, s)
	}
	return int64(b), nil
}

// ParseMemMiB parses a memory size into whole MiB.
func ParseMemMiB(s string) (int, error) {
	b, err := ParseSize(s)
	if err != nil {
		return 0, err
	}
	if b%MiB != 0 {
		return 0, fmt.Errorf("%w %q: memory is sized in whole MiB (e.g. 512M, 2G)", ErrSize, s)
	}
	if b/MiB > math.MaxInt32 {
		return 0, fmt.Errorf("%w %q: too large", ErrSize, s)
	}
	return int(b / MiB), nil
}

// ParseDiskGiB parses a disk size into whole GiB.
func ParseDiskGiB(s string) (int, error) {
	b, err := ParseSize(s)
	if err != nil {
		return 0, err
	}
	if b%GiB != 0 {
		return 0, fmt.Errorf("%w %q: disks are sized in whole GiB (e.g. 20G, 1T)", ErrSize, s)
	}
	if b/GiB > math.MaxInt32 {
		return 0, fmt.Errorf("%w %q: too large", ErrSize, s)
	}
	return int(b / GiB), nil
}

// FormatMiB renders a MiB count the way ParseMemMiB reads it: "8G", "512M".
func FormatMiB(mib int) string {
	if mib != 0 && mib%1024 == 0 {
		return strconv.Itoa(mib/1024) + "G"
	}
	return strconv.Itoa(mib) + "M"
}

// FormatGiB renders a GiB count: "100G", "2T".
func FormatGiB(gib int) string {
	if gib != 0 && gib%1024 == 0 {
		return strconv.Itoa(gib/1024) + "T"
	}
	return strconv.Itoa(gib) + "G"
}

// plainNumber accepts digits with at most one decimal point, so that
// strconv's extras (signs, exponents, hex, underscores, Inf) never count as
// a size.
func plainNumber(s string) bool {
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}
