// Package memory owns guest RAM: a file (memfd, or a file in a tmpfs folder) mapped
// MAP_SHARED into the monitor (or MAP_PRIVATE over a snapshot's memory file, see
// MapPrivate and Remap), laid out in guest-physical space around the MMIO gap
// (see vmm/boot/layout.go), with bounds-checked reads and writes by guest-physical
// address.
//
// Invariant: every method that takes a guest-physical address checks that the whole
// range lies inside one RAM region before touching host memory. A guest-supplied
// address can therefore never make the monitor read or write outside guest RAM.
package memory
