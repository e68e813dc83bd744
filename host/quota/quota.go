package quota

import (
	"errors"
	"fmt"
)

// Bounds no configuration can lift: below them a VM cannot boot, above them
// the monitor refuses.
const (
	MinMemMiB  = 64
	MinDiskGiB = 1
	// MaxCPUs is the most vCPUs one monitor runs.
	MaxCPUs = 255
)

// Limits are what a daemon allows. The JSON form is the daemon's config file
// and the store's copy.
type Limits struct {
	MaxVMs     int `json:"max_vms"`      // VMs that may exist at once, in any state
	MaxCPUs    int `json:"max_cpus"`     // vCPUs per VM
	MaxMemMiB  int `json:"max_mem_mib"`  // memory per VM
	MaxDiskGiB int `json:"max_disk_gib"` // disk per VM

	// Sizes of a VM whose request leaves them out.
	DefaultCPUs    int `json:"default_cpus"`
	DefaultMemMiB  int `json:"default_mem_mib"`
	DefaultDiskGiB int `json:"default_disk_gib"`
}

// Defaults are boxd's out-of-the-box limits: 10 VMs of at most 2 vCPUs,
// 8 GiB of memory and a 100 GiB disk each, and a new VM gets the most it may
// have (memory and disk are sparse: a guest only costs what it touches).
func Defaults() Limits {
	return Limits{
		MaxVMs: 10, MaxCPUs: 2, MaxMemMiB: 8 << 10, MaxDiskGiB: 100,
		DefaultCPUs: 2, DefaultMemMiB: 8 << 10, DefaultDiskGiB: 100,
	}
}

// Validate checks that l is usable: positive limits, within the hard bounds,
// and defaults within the limits.
func (l Limits) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(l.MaxVMs >= 1, "max VMs %d: want at least 1", l.MaxVMs)
	check(l.MaxCPUs >= 1 && l.MaxCPUs <= MaxCPUs, "max vCPUs %d: want 1..%d", l.MaxCPUs, MaxCPUs)
	check(l.MaxMemMiB >= MinMemMiB, "max memory %s: want at least %s", FormatMiB(l.MaxMemMiB), FormatMiB(MinMemMiB))
	check(l.MaxDiskGiB >= MinDiskGiB, "max disk %s: want at least %s", FormatGiB(l.MaxDiskGiB), FormatGiB(MinDiskGiB))
	check(l.DefaultCPUs >= 1 && l.DefaultCPUs <= l.MaxCPUs, "default vCPUs %d: want 1..%d (the max)", l.DefaultCPUs, l.MaxCPUs)
	check(l.DefaultMemMiB >= MinMemMiB && l.DefaultMemMiB <= l.MaxMemMiB, "default memory %s: want %s..%s (the max)", FormatMiB(l.DefaultMemMiB), FormatMiB(MinMemMiB), FormatMiB(l.MaxMemMiB))
	check(l.DefaultDiskGiB >= MinDiskGiB && l.DefaultDiskGiB <= l.MaxDiskGiB, "default disk %s: want %s..%s (the max)", FormatGiB(l.DefaultDiskGiB), FormatGiB(MinDiskGiB), FormatGiB(l.MaxDiskGiB))
	if len(errs) > 0 {
		return fmt.Errorf("quota: %w", errors.Join(errs...))
	}
	return nil
}

// Size is what one VM gets. Zero fields mean "the default".
type Size struct {
	CPUs    int
	MemMiB  int
	DiskGiB int
}

// Error is a refusal: Limit names what was exceeded, Flag the daemon flag
// that raises it.
type Error struct {
	Limit string // "vms", "cpus", "mem", "disk"
	Asked int    // what the request would make it
	Max   int
	Flag  string // "--max-vms"
	msg   string
}

func (e *Error) Error() string { return e.msg }

// Hint says what to do about e.
func (e *Error) Hint() string {
	if e.Limit == "vms" {
		return fmt.Sprintf("destroy a VM (boxd destroy NAME), or raise the limit with `boxd daemon %s N`", e.Flag)
	}
	return fmt.Sprintf("ask for less, or raise the limit with `boxd daemon %s N`", e.Flag)
}

// Resolve fills the zero fields of s with the defaults and checks the result
// against the per-VM limits and the hard bounds. A value below a hard minimum
// is a plain error (not a quota refusal): no limit can allow it.
func (l Limits) Resolve(s Size) (Size, error) {
	if s.CPUs == 0 {
		s.CPUs = l.DefaultCPUs
	}
	if s.MemMiB == 0 {
		s.MemMiB = l.DefaultMemMiB
	}
	if s.DiskGiB == 0 {
		s.DiskGiB = l.DefaultDiskGiB
	}
	switch {
	case s.CPUs < 0:
		return s, fmt.Errorf("cpus %d: want at least 1", s.CPUs)
	case s.MemMiB < MinMemMiB:
		return s, fmt.Errorf("memory %s: want at least %s", FormatMiB(s.MemMiB), FormatMiB(MinMemMiB))
	case s.DiskGiB < MinDiskGiB:
		return s, fmt.Errorf("disk %s: want at least %s", FormatGiB(s.DiskGiB), FormatGiB(MinDiskGiB))
	case s.CPUs > l.MaxCPUs:
		return s, &Error{Limit: "cpus", Asked: s.CPUs, Max: l.MaxCPUs, Flag: "--max-cpus",
			msg: fmt.Sprintf("quota exceeded: %d vCPUs asked for, the per-VM limit is %d", s.CPUs, l.MaxCPUs)}
	case s.MemMiB > l.MaxMemMiB:
		return s, &Error{Limit: "mem", Asked: s.MemMiB, Max: l.MaxMemMiB, Flag: "--max-mem",
			msg: fmt.Sprintf("quota exceeded: %s of memory asked for, the per-VM limit is %s", FormatMiB(s.MemMiB), FormatMiB(l.MaxMemMiB))}
	case s.DiskGiB > l.MaxDiskGiB:
		return s, &Error{Limit: "disk", Asked: s.DiskGiB, Max: l.MaxDiskGiB, Flag: "--max-disk",
			msg: fmt.Sprintf("quota exceeded: a %s disk asked for, the per-VM limit is %s", FormatGiB(s.DiskGiB), FormatGiB(l.MaxDiskGiB))}
	}
	return s, nil
}

// CheckCount refuses one more VM when existing VMs already reach MaxVMs.
func (l Limits) CheckCount(existing int) error {
	if existing < l.MaxVMs {
		return nil
	}
	return &Error{Limit: "vms", Asked: existing + 1, Max: l.MaxVMs, Flag: "--max-vms",
		msg: fmt.Sprintf("quota exceeded: %d VMs exist, the limit is %d", existing, l.MaxVMs)}
}
