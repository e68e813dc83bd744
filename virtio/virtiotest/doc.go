// Package virtiotest provides the fakes virtio devices are tested and fuzzed
// with, without KVM: guest memory backed by a byte slice (with a configurable
// base address and holes, so out-of-range accesses can be tested), an
// interrupt line that counts and signals triggers, a mock driver that lays out
// and drives a split virtqueue the way Linux's virtio_ring does, and a
// Linux-like virtio-mmio probe sequence.
//
// It is test support: helpers panic on misuse by the test itself (for
// example, running out of fake memory), never on what a device does.
package virtiotest
