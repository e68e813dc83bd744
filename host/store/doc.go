// Package store is the daemon's VM registry: one bbolt file in the state
// directory holding a record per VM (its sizes, state, network lease, disk,
// vsock CID, the identity of its monitor process and how it last ended) and
// the daemon's quota configuration, so a restarted daemon knows every VM and
// every resource it holds.
//
// Invariants:
//   - VM names are unique; records are keyed by name and listed in name order.
//   - Each write is one bbolt transaction: a record is either fully written
//     or not at all, and a crash never leaves half a VM.
//   - The file carries a schema version. A file from a newer boxd is refused
//     (never rewritten); older schemas are migrated on open.
//   - Only one process opens a store at a time (bbolt's file lock); a second
//     daemon on the same state directory fails with ErrLocked.
package store
