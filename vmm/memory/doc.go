// Package memory owns guest RAM: a file (memfd, or a file in a tmpfs folder) mapped
// MAP_SHARED into the monitor, or MAP_PRIVATE over a snapshot's layers (MapManifest,
// MapPrivate, Clone), laid out in guest-physical space around the MMIO gap
// (see vmm/boot/layout.go), with bounds-checked reads and writes by guest-physical
// address.
//
// Layers: a snapshot's memory is a Manifest, a base file mapped over the whole
// range plus extents of other files mapped over it. Freeze turns a RAM's current
// contents into such files (its own file the first time, then a delta of the pages
// it holds private copies of, found with Dirty) and remaps the RAM onto them, so
// forks of forks cost what was written since, not the size of the guest.
//
// Link folders: a RAM gives every layer it maps a hard link of its own, in
// its memory folder (Options.Dir, a tmpfs) or, for a layer on another
// filesystem (a snapshot suspended to disk), its layer folder
// (Options.LayerDir), and removes them when closed. So snapshot folders can
// be deleted while VMs restored from them live, and a Freeze into a folder
// a layer cannot be linked into names the RAM's own link by absolute path.
//
// Invariants:
//   - Every method that takes a guest-physical address checks that the whole
//     range lies inside one RAM region before touching host memory. A
//     guest-supplied address can therefore never make the monitor read or write
//     outside guest RAM.
//   - Host addresses never change for the life of a RAM (remaps are MAP_FIXED
//     over the same range), so KVM memory slots stay valid.
//   - Layer files never change once frozen; a RAM only ever maps them
//     MAP_PRIVATE. DecodeManifest and MapManifest refuse a manifest that is
//     corrupt, out of range, names anything but a regular file in its folder
//     or at a clean absolute path (no symbolic link as the last component;
//     nothing else is even opened for reading), or maps past a file's end.
package memory
