// Package boot puts a Linux kernel into guest memory and describes the state
// vCPU 0 starts in. It owns the guest-physical layout (layout.go: every
// address the monitor uses, in one place), the two kernel formats — an ELF
// vmlinux entered through its PVH entry point (hvm_start_info) and a bzImage
// entered through the Linux 64-bit boot protocol (boot_params, identity page
// tables) — the e820/PVH memory map, the command line and the Intel MP table.
//
// Load is the whole job; it returns an Entry, plain register and segment
// values the monitor copies onto its KVM structures. The package writes guest
// memory only through the small Memory interface, so it is tested and fuzzed
// on fake memory, and it never imports vmm/kvm or uses unsafe.
//
// Invariants:
//   - Kernel images are untrusted input: every size, offset and address read
//     from one is checked against the file size and the guest RAM layout
//     before it is used; a hostile image yields an error, never a panic, a
//     write outside RAM or an allocation larger than a bounded chunk.
//   - Nothing the kernel brings (ELF segments, the protected-mode kernel, the
//     initrd) is placed below HighMemStart, so the boot structures in the
//     first megabyte cannot be overwritten by the images.
//   - The initrd is placed page-aligned at the top of low RAM, below the
//     kernel's initrd_addr_max and above the kernel's reserved range.
//   - Segment registers in Entry are decoded from the very GDT written to
//     guest memory, so the two cannot disagree.
package boot
