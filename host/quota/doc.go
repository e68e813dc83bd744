// Package quota owns the limits the daemon enforces — how many VMs, and how
// large each may be — the sizes a VM gets when its request leaves them out,
// and the human size syntax ("512M", "8G") the CLI and config accept.
//
// Invariants:
//   - Sizes are binary: 1M is 1 MiB, 1G is 1 GiB. Memory is counted in whole
//     MiB and disks in whole GiB; a size that is not a whole unit is refused,
//     never rounded, so what a VM gets is what was asked.
//   - Every refusal is an *Error naming the limit, the value asked for and
//     the daemon flag that raises it.
package quota
