// Package cmdline defines the boot configuration the host hands to a guest on
// the kernel command line (boxd.ip=10.0.0.2/24 boxd.gw=10.0.0.1 ...): guest
// init parses it from /proc/cmdline with Parse, and the host renders it with
// Config.Args, so both sides share one definition of every key. The keys are
// documented in docs/guest-cmdline.md.
//
// Invariants:
//   - Parse never panics and never fails as a whole: every key that is valid is
//     applied, every key that is not is reported in the returned error and left
//     at its default, so one bad value cannot keep a guest from booting.
//   - For any Config that Parse returns without error, Parse(Join(c.Args()))
//     returns the same Config (the fuzz target checks it).
//   - Keys outside the boxd. namespace belong to the kernel and are ignored.
package cmdline
