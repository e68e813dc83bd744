package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HostCID is the well-known context ID of the host (VMADDR_CID_HOST): the
// only destination a guest packet may name, and the source of every packet
// the device delivers.
const HostCID = 2

// HeaderLen is the size of struct virtio_vsock_hdr.
const HeaderLen = 44

// Socket types and operations (virtio 1.2 §5.10.6).
const (
	typeStream = 1

	opRequest       = 1
	opResponse      = 2
	opRst           = 3
	opShutdown      = 4
	opRW            = 5
	opCreditUpdate  = 6
	opCreditRequest = 7

	// SHUTDOWN flags: the sender will receive (RCV) / send (SEND) no more.
	shutRcv  = 1
	shutSend = 2
	shutBoth = shutRcv | shutSend

	// eventTransportReset is the id of struct virtio_vsock_event after which
	// the driver drops every connection and re-reads guest_cid.
	eventTransportReset = 0
	eventLen            = 4
)

// header is struct virtio_vsock_hdr decoded field by field from its
// little-endian wire form (never a struct laid over guest memory).
type header struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       uint16
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

// decodeHeader reads a header from the first HeaderLen bytes of b.
func decodeHeader(b []byte) header {
	_ = b[HeaderLen-1]
	le := binary.LittleEndian
	return header{
		SrcCID:   le.Uint64(b[0:]),
		DstCID:   le.Uint64(b[8:]),
		SrcPort:  le.Uint32(b[16:]),
		DstPort:  le.Uint32(b[20:]),
		Len:      le.Uint32(b[24:]),
		Type:     le.Uint16(b[28:]),
		Op:       le.Uint16(b[30:]),
		Flags:    le.Uint32(b[32:]),
		BufAlloc: le.Uint32(b[36:]),
		FwdCnt:   le.Uint32(b[40:]),
	}
}

// encode writes h into the first HeaderLen bytes of b.
func (h header) encode(b []byte) {
	_ = b[HeaderLen-1]
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}

func (h header) String() string {
	return fmt.Sprintf("op %d %d:%d -> %d:%d len %d flags %#x buf_alloc %d fwd_cnt %d",
		h.Op, h.SrcCID, h.SrcPort, h.DstCID, h.DstPort, h.Len, h.Flags, h.BufAlloc, h.FwdCnt)
}

// Why a guest packet was refused; each maps to a Stats counter.
var (
	errBadLength = errors.New("len does not match the buffer")
	errBadCID    = errors.New("wrong source or destination CID")
	errBadType   = errors.New("unsupported socket type")
	errBadOp     = errors.New("unknown operation")
)

// validate checks what can be checked of a guest packet without connection
// state: payload holds the readable bytes after the header.
func validate(h header, guestCID uint64, payload uint64) error {
	switch {
	case h.SrcCID != guestCID || h.DstCID != HostCID:
		// First, so that nothing is ever answered to a forged address.
		return fmt.Errorf("%w: %d -> %d (guest is %d)", errBadCID, h.SrcCID, h.DstCID, guestCID)
	case uint64(h.Len) > payload:
		return fmt.Errorf("%w: len %d, %d bytes after the header", errBadLength, h.Len, payload)
	case h.Op < opRequest || h.Op > opCreditRequest:
		return fmt.Errorf("%w: %d", errBadOp, h.Op)
	case h.Type != typeStream:
		return fmt.Errorf("%w: %d", errBadType, h.Type)
	case h.Op != opRW && h.Len != 0:
		// Control packets carry no payload; one that claims some is not
		// from a driver that follows the spec.
		return fmt.Errorf("%w: op %d with len %d", errBadLength, h.Op, h.Len)
	}
	return nil
}
