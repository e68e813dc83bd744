// Package snapshot owns the saved form of a VM: plain data (State) that is
// separate from the live machine, and its file encoding (docs/snapshot-format.md).
//
// Invariants:
//   - State holds values, never live objects (no fds, no mappings): a State can
//     be written, read back and restored into another process.
//   - Decode either returns a State whose every count, length and identifier has
//     been checked, or an error; it never returns a partly read State, so a
//     corrupt or foreign file can never be half-restored.
//   - The encoding is explicit little-endian (encoding/binary) with a magic, a
//     format version and a CRC32C of the body. A new format gets a new version;
//     Decode keeps reading every version it ever wrote (golden files in testdata).
//
// Guest memory is not part of State: it is the VM's memory file, mapped
// MAP_PRIVATE by whoever restores it.
package snapshot
