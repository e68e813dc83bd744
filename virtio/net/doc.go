// Package net implements a virtio-net device (virtio 1.2 §5.1) with one
// receive queue (0) and one transmit queue (1), over a Backend that carries
// Ethernet frames prefixed by the 12-byte virtio_net_hdr_v1. The production
// backend is a Linux TAP (OpenTAP) opened with IFF_VNET_HDR, so the header
// passes unchanged between guest and kernel and checksum and TCP
// segmentation offloads cost the device nothing: the kernel completes or
// produces them.
//
// Features offered: VERSION_1, EVENT_IDX, INDIRECT_DESC, MAC, STATUS,
// MRG_RXBUF, MTU (when configured) and, over an Offloader backend, CSUM,
// GUEST_CSUM, GUEST_TSO4/6 and HOST_TSO4/6. ECN, UFO/USO, the control
// queue and multiqueue are not offered.
//
// One worker goroutine per activation serves both queues. It sleeps only in
// epoll_wait, on an eventfd that Notify writes and on the backend's fd, never
// on a timer, and it asks epoll for the backend's readability only while it
// holds a receive chain: when the guest has no receive buffers the device
// stops reading, frames wait in the kernel's queue, and the guest's next
// kick resumes reception (Pop re-enables notifications before reporting an
// empty ring, so the kick cannot be lost). A frame once read is never
// dropped while the guest can still supply buffers for it: it waits, staged,
// until they arrive. A transmit that hits EAGAIN keeps its chain and waits
// for writability. Each direction handles at most a budget of frames before
// the other gets a turn.
//
// Invariants:
//   - Every chain is validated before use: receive chains are device-
//     writable only with room for the header; transmit chains are
//     device-readable only, hold a header and a frame of 14 to MaxFrameLen
//     bytes, and carry a header that asks only for offloads the driver
//     negotiated. Malformed chains go back to the driver unused and are
//     counted (Stats); only a corrupt ring stops the device, through the
//     transport's DEVICE_NEEDS_RESET.
//   - A transmit header is copied out of guest memory and checked; the copy
//     is what the backend sees. The frame itself is written from guest
//     memory without a copy (writev).
//   - A merged receive frame (num_buffers > 1) reaches the used ring whole:
//     the used index moves once for all its buffers.
//   - Reset returns only when the worker has stopped touching guest memory;
//     Close also releases the eventfd, the epoll descriptor and the backend.
package net
