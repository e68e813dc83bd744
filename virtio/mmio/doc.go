// Package mmio implements the virtio-mmio transport, version 2 (virtio 1.2
// §4.2): the register file a guest driver sees at a device's MMIO window, the
// device status state machine, feature negotiation, queue configuration and
// the interrupt status register. It wraps one Device (blk, net, vsock...) and
// hands it validated queues when the driver sets DRIVER_OK.
//
// Invariants:
//   - Every register access is validated; a misbehaving driver gets ignored
//     writes, zero reads and (for errors the device hits) DEVICE_NEEDS_RESET,
//     never a panic or a blocked vCPU.
//   - Features are accepted only between DRIVER and FEATURES_OK, must be a
//     subset of what the device offers and must include VIRTIO_F_VERSION_1;
//     queues are configured only between FEATURES_OK and DRIVER_OK.
//   - Writing 0 to Status resets the device synchronously: when the write
//     returns, the device worker has stopped touching guest memory and every
//     register is back to its initial value.
//
// Snapshots: Pause quiesces the transport and, for a device that is an
// mmio.Snapshotter, the device (its worker stops touching guest memory;
// kicks are dropped and Resume notifies every queue). SaveState, called
// paused, writes a versioned blob of the registers, every queue's
// configuration and position and the device's own blob; RestoreState
// validates such a blob as untrusted input (device type, queue sizes,
// offered features, the status state machine, ring addresses against guest
// memory) into a fresh, paused transport and re-activates the device on the
// saved queues. Any error leaves the transport reset.
//
// Concurrency: Read and Write may be called from several vCPU goroutines;
// Transport.mu serializes them and is held while calling the Device's config,
// Activate and Reset methods. The device's worker reaches back only through
// Signal and Fail (virtio.Transport), which use atomics and never take mu, so
// Reset may wait for the worker without deadlock. Notify (the ioeventfd path)
// is lock-free as well.
package mmio
