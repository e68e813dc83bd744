package net

import "io"

// Backend carries frames between the device and the host. Every frame, in
// both directions, starts with a HeaderLen-byte virtio_net_hdr_v1 followed by
// the Ethernet frame. *TAP is the production backend.
//
// The device calls Read and Writev from one goroutine at a time and never
// blocks in them: it waits for readiness of Fd with epoll instead.
type Backend interface {
	io.Closer
	// Fd is a file descriptor that polls readable when Read has a frame and
	// writable when Writev can take one. It stays valid until Close.
	Fd() int
	// Read reads one whole frame into p and returns its length. With no
	// frame waiting it returns an error wrapping unix.EAGAIN at once. A
	// frame longer than p may be truncated to len(p).
	Read(p []byte) (int, error)
	// Writev writes one frame gathered from iov, all of it or nothing. If
	// the backend has no room it returns an error wrapping unix.EAGAIN at
	// once. The slices may alias guest memory: they must not be retained.
	Writev(iov [][]byte) (int, error)
}

// Offloader is a Backend that understands the offload fields of the header:
// it completes partial checksums (HdrNeedsCsum) and segments GSO frames the
// device writes, and it can produce such frames for the guest once told the
// guest accepts them. A TAP opened with IFF_VNET_HDR is one (the kernel
// does the work). The device offers checksum and TSO features only over an
// Offloader.
type Offloader interface {
	Backend
	// SetOffload tells the backend which offloaded frames the guest
	// accepts from now on (TUNSETOFFLOAD); 0 means plain frames with full
	// checksums only.
	SetOffload(o Offload) error
}

// Offload is a set of receive offloads the guest accepts. The values are
// the kernel's TUN_F_* flags.
type Offload uint

// Offload flags.
const (
	OffloadCsum   Offload = 0x01 // partial checksums (VIRTIO_NET_F_GUEST_CSUM)
	OffloadTSO4   Offload = 0x02 // TCP over IPv4 segmentation (GUEST_TSO4)
	OffloadTSO6   Offload = 0x04 // TCP over IPv6 segmentation (GUEST_TSO6)
	OffloadTSOECN Offload = 0x08 // TSO with ECN (GUEST_ECN)
)
