// Package machine assembles a VM — KVM VM, guest RAM, in-kernel irqchip and PIT,
// vCPUs with their CPUID and MSRs, the platform devices and buses — loads a kernel,
// and owns the VM's lifecycle:
//
//	created → running ⇄ paused → stopped
//
// A machine stops when the guest powers off or reboots (power register, i8042
// reset), when it crashes (triple fault, KVM internal error, a kernel panic seen
// on the console), or when the host stops it. The first such event wins and is
// the machine's Result; every vCPU is then kicked out of the guest.
//
// Snapshot, Restore and Fork (snapshot.go) move a machine's state to and from
// vmm/snapshot's plain data. Snapshot needs a paused (or never started)
// machine; Restore builds a Created machine over RAM the caller maps
// (memory.MapPrivate of a memory file); Fork does both without copying guest
// memory and leaves the parent's RAM MAP_PRIVATE, so the memory file stays as
// it was at the fork.
package machine
