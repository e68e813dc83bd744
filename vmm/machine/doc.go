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
// Pause stops the vCPUs and then quiesces every device (no guest memory access,
// no interrupt) until Resume, so a paused machine's state is stable.
//
// Snapshot (snapshot.go) saves a paused machine as vmm/snapshot's plain data:
// vCPUs, in-kernel irqchip/PIT/clock and every device by name; Restore builds a
// Created machine from it over RAM the caller maps, refusing a different device
// set, and advances the guest clock by the time since the save.
//
// Snapshot directories (snapdir.go) are what crosses processes: SaveFork writes
// one children restore from with RestoreDir, sharing the parent's memory
// copy-on-write through layered memory files (vmm/memory), at a cost that
// follows the pages written since the last fork, not the VM's size; SaveFull
// writes a self-contained one for suspend to disk. Standby (snapdir_standby.go)
// builds a child VM and registers its memory before the parent pauses. Fork
// (fork.go) is the in-process form.
package machine
