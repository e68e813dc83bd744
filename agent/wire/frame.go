package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame header layout (big-endian), HeaderSize bytes:
//
//	offset size field
//	0      4    payload length N (0..MaxPayload)
//	4      1    type (Type)
//	5      1    stream (Stream; zero unless type is Data, EOF or Window)
//	6      2    reserved, must be zero
//	8      4    channel (zero only for Hello)
//	12     N    payload
const (
	HeaderSize = 12

	// MaxPayload bounds every frame, so a reader never allocates more than this
	// for one frame whatever the peer claims. It must hold the largest JSON
	// message (a directory listing).
	MaxPayload = 4 << 20

	// MaxDataChunk bounds the payload of a Data frame, so one stream cannot hog
	// the connection for long while others wait.
	MaxDataChunk = 64 << 10
)

// Type is a frame type.
type Type uint8

// Frame types. Numbers are part of the wire format: never renumber.
const (
	TypeHello   Type = 1 // JSON Hello; channel 0; first frame each way
	TypeOpen    Type = 2 // JSON Open; client→server; opens a channel
	TypeReply   Type = 3 // JSON Result; server→client; channel stays open
	TypeData    Type = 4 // raw bytes on a stream; counts against its window
	TypeEOF     Type = 5 // half-close of a stream; empty payload
	TypeWindow  Type = 6 // 4-byte big-endian credit increment for a stream
	TypeControl Type = 7 // JSON Control; client→server
	TypeClose   Type = 8 // JSON Result; ends the channel (see doc.go)
	typeLimit   Type = 9
)

func (t Type) String() string {
	names := [...]string{"invalid", "hello", "open", "reply", "data", "eof", "window", "control", "close"}
	if t < typeLimit {
		return names[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Stream names one byte stream of a channel.
type Stream uint8

// Streams. Stdin flows client→server; Stdout and Stderr flow server→client.
// File uploads use Stdin, downloads and event feeds use Stdout.
const (
	StreamStdin  Stream = 0
	StreamStdout Stream = 1
	StreamStderr Stream = 2
	NumStreams          = 3
)

// Frame is one decoded frame. Payload aliases the decoder's buffer unless the
// caller copies it.
type Frame struct {
	Type    Type
	Stream  Stream
	Channel uint32
	Payload []byte
}

// Decoding errors. Every one of them is fatal to the connection.
var (
	ErrFrameTooLarge = errors.New("frame payload too large")
	ErrMalformed     = errors.New("malformed frame")
	ErrShortFrame    = errors.New("short frame")
)

// parseHeader validates a header and returns the frame it describes, without
// payload, and the payload length.
func parseHeader(h []byte) (Frame, int, error) {
	if len(h) < HeaderSize {
		return Frame{}, 0, ErrShortFrame
	}
	n := binary.BigEndian.Uint32(h[0:4])
	f := Frame{
		Type:    Type(h[4]),
		Stream:  Stream(h[5]),
		Channel: binary.BigEndian.Uint32(h[8:12]),
	}
	if n > MaxPayload {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes (max %d)", ErrFrameTooLarge, n, MaxPayload)
	}
	if h[6] != 0 || h[7] != 0 {
		return Frame{}, 0, fmt.Errorf("%w: reserved bits set", ErrMalformed)
	}
	if err := f.checkHeader(int(n)); err != nil {
		return Frame{}, 0, err
	}
	return f, int(n), nil
}

// checkHeader applies the per-type rules that do not need the payload bytes.
func (f Frame) checkHeader(n int) error {
	if f.Type == 0 || f.Type >= typeLimit {
		return fmt.Errorf("%w: unknown type %d", ErrMalformed, uint8(f.Type))
	}
	if (f.Type == TypeHello) != (f.Channel == 0) {
		return fmt.Errorf("%w: %v on channel %d", ErrMalformed, f.Type, f.Channel)
	}
	switch f.Type {
	case TypeData, TypeEOF, TypeWindow:
		if f.Stream >= NumStreams {
			return fmt.Errorf("%w: stream %d", ErrMalformed, f.Stream)
		}
	default:
		if f.Stream != 0 {
			return fmt.Errorf("%w: stream set on %v", ErrMalformed, f.Type)
		}
	}
	switch f.Type {
	case TypeData:
		if n == 0 || n > MaxDataChunk {
			return fmt.Errorf("%w: data frame of %d bytes", ErrMalformed, n)
		}
	case TypeEOF:
		if n != 0 {
			return fmt.Errorf("%w: eof with payload", ErrMalformed)
		}
	case TypeWindow:
		if n != 4 {
			return fmt.Errorf("%w: window payload of %d bytes", ErrMalformed, n)
		}
	}
	return nil
}

// checkPayload applies the rules that need the payload.
func (f Frame) checkPayload() error {
	if f.Type == TypeWindow && WindowIncrement(f.Payload) == 0 {
		return fmt.Errorf("%w: zero window increment", ErrMalformed)
	}
	return nil
}

// WindowIncrement decodes a Window frame's payload (validated by the decoder).
func WindowIncrement(p []byte) uint32 {
	if len(p) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

// AppendFrame appends the encoding of f to dst. It validates f by the same
// rules the decoder applies, so a peer never receives a frame it must reject.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if len(f.Payload) > MaxPayload {
		return dst, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(f.Payload))
	}
	if err := f.checkHeader(len(f.Payload)); err != nil {
		return dst, err
	}
	if err := f.checkPayload(); err != nil {
		return dst, err
	}
	var h [HeaderSize]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(len(f.Payload)))
	h[4] = byte(f.Type)
	h[5] = byte(f.Stream)
	binary.BigEndian.PutUint32(h[8:12], f.Channel)
	dst = append(dst, h[:]...)
	return append(dst, f.Payload...), nil
}

// DecodeFrame decodes the first frame of b and returns it with the number of
// bytes it used. It returns ErrShortFrame if b holds only part of a frame. The
// payload aliases b.
func DecodeFrame(b []byte) (Frame, int, error) {
	f, n, err := parseHeader(b)
	if err != nil {
		return Frame{}, 0, err
	}
	if len(b)-HeaderSize < n {
		return Frame{}, 0, ErrShortFrame
	}
	f.Payload = b[HeaderSize : HeaderSize+n]
	if err := f.checkPayload(); err != nil {
		return Frame{}, 0, err
	}
	return f, HeaderSize + n, nil
}

// Reader decodes frames from a byte stream, reusing one buffer.
type Reader struct {
	r   io.Reader
	hdr [HeaderSize]byte
	buf []byte
}

// NewReader returns a Reader decoding frames from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads one frame. Its payload is valid until the next call. The buffer
// grows only after the header has been validated, and never past MaxPayload.
func (r *Reader) Next() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return Frame{}, err
	}
	f, n, err := parseHeader(r.hdr[:])
	if err != nil {
		return Frame{}, err
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	f.Payload = r.buf[:n]
	if _, err := io.ReadFull(r.r, f.Payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	if err := f.checkPayload(); err != nil {
		return Frame{}, err
	}
	return f, nil
}
