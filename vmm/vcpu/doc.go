// Package vcpu runs one KVM vCPU on its own OS-locked goroutine and turns its
// exits into bus accesses and lifecycle events.
//
// Control: the machine asks a vCPU to pause or stop by setting its requested state
// and calling Kick (kvm_run.immediate_exit plus a signal to the vCPU thread), never
// by polling. Guest-caused oddities (accesses to unmapped ports or addresses, odd
// widths) are counted and answered with all-ones reads; they never end the
// monitor. Guest-fatal events (triple fault, entry failure, KVM internal error)
// end the vCPU's loop with a typed Stop.
package vcpu
