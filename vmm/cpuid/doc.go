// Package cpuid turns the CPUID leaves KVM supports (KVM_GET_SUPPORTED_CPUID) into
// the leaves one guest vCPU sees: its APIC ID and the VM's topology (ncpus cores
// in one socket, one thread each), the hypervisor bit, and no PMU (a guest that
// programs performance counters under nested SVM gets unhandled-MSR noise and
// nothing useful).
//
// It is a pure function over plain data, so it is tested without /dev/kvm.
package cpuid
