// Package kvm is boxd's binding to the Linux KVM API (Documentation/virt/kvm/api.rst),
// written directly over golang.org/x/sys/unix.
//
// There is one type per kind of file descriptor: System (/dev/kvm), VM and VCPU.
// Exits are decoded from the shared kvm_run page in one place (exit.go) into typed
// values. Register and state structures whose layout the kernel fixes (kvm_regs,
// kvm_sregs, kvm_fpu, ...) are Go structs of identical layout, checked by
// TestABISizes; structures the monitor only saves and restores (XSAVE, LAPIC, vCPU
// events, debug registers, irqchip, ...) are kept as opaque byte arrays of the
// kernel's size, which is what a snapshot needs.
//
// Every use of package unsafe is in ioctl_unsafe.go.
package kvm
