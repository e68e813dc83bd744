package net

import "encoding/binary"

// HeaderLen is the length of struct virtio_net_hdr_v1 (virtio 1.2 §5.1.6):
// flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers.
// With VIRTIO_F_VERSION_1 it prefixes every frame in both directions, whether
// or not VIRTIO_NET_F_MRG_RXBUF was negotiated, and it is also what a TAP
// opened by OpenTAP reads and writes (TUNSETVNETHDRSZ), so it passes between
// guest and host unchanged.
const HeaderLen = 12

// MaxFrameLen bounds an Ethernet frame (without the header) in either
// direction: a 64 KiB GSO packet plus Ethernet and VLAN headers. It is the
// 65562-byte receive buffer the specification asks drivers to post for
// offloads (§5.1.6.3.1), minus the header.
const MaxFrameLen = 65550

// minFrameLen is an Ethernet header: anything shorter is not a frame.
const minFrameLen = 14

// Header flags and GSO types (virtio 1.2 §5.1.6).
const (
	HdrNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from csum_start is partial
	HdrDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: checksum already verified (receive only)
	HdrRSCInfo   = 4 // VIRTIO_NET_HDR_F_RSC_INFO (receive only, needs GUEST_RSC*)

	GSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP (UFO)
	GSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4 (USO)
	GSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN, ORed into a TCP type
)

// hdr is a virtio_net_hdr_v1 in wire form (little endian). Its accessors
// expect len(h) >= HeaderLen.
type hdr []byte

func (h hdr) flags() uint8           { return h[0] }
func (h hdr) gsoType() uint8         { return h[1] }
func (h hdr) hdrLen() uint16         { return binary.LittleEndian.Uint16(h[2:]) }
func (h hdr) gsoSize() uint16        { return binary.LittleEndian.Uint16(h[4:]) }
func (h hdr) csumStart() uint16      { return binary.LittleEndian.Uint16(h[6:]) }
func (h hdr) csumOffset() uint16     { return binary.LittleEndian.Uint16(h[8:]) }
func (h hdr) numBuffers() uint16     { return binary.LittleEndian.Uint16(h[10:]) }
func (h hdr) setFlags(f uint8)       { h[0] = f }
func (h hdr) setNumBuffers(n uint16) { binary.LittleEndian.PutUint16(h[10:], n) }
