package api

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// UpgradeProtocol is the Upgrade token of a streamed exec session: after the
// 101 response, both sides exchange frames on the connection.
const UpgradeProtocol = "boxd-exec.v1"

// FrameType says what a frame carries.
type FrameType byte

// Frames from the client.
const (
	FrameStdin      FrameType = 1 // data for the command's stdin
	FrameStdinClose FrameType = 2 // end of stdin (empty)
	FrameResize     FrameType = 3 // rows, cols: two big-endian uint16
	FrameSignal     FrameType = 4 // a signal number: big-endian uint32
)

// Frames from the daemon.
const (
	FrameStdout FrameType = 16 // output
	FrameStderr FrameType = 17
	FrameExit   FrameType = 18 // ExecResult JSON (without output); the last frame
	FrameError  FrameType = 19 // Error JSON; the last frame
)

// MaxFrame bounds a frame's payload. Writers split data into frames of at
// most this size.
const MaxFrame = 64 << 10

const frameHeader = 5 // type, then a big-endian uint32 length

// Frame is one unit of a streamed session.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// ReadFrame reads one frame from r into buf (which it reuses when large
// enough; the returned payload aliases it). It refuses unknown types,
// payloads over MaxFrame and control frames of the wrong size, so a peer
// cannot make it allocate more than MaxFrame.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	t, n := FrameType(h[0]), binary.BigEndian.Uint32(h[1:])
	if n > MaxFrame {
		return Frame{}, fmt.Errorf("frame of %d bytes, the limit is %d", n, MaxFrame)
	}
	want := -1
	switch t {
	case FrameStdin, FrameStdout, FrameStderr, FrameExit, FrameError:
	case FrameStdinClose:
		want = 0
	case FrameResize, FrameSignal:
		want = 4
	default:
		return Frame{}, fmt.Errorf("unknown frame type %d", t)
	}
	if want >= 0 && int(n) != want {
		return Frame{}, fmt.Errorf("frame type %d of %d bytes, want %d", t, n, want)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Type: t, Payload: buf}, nil
}

// FrameWriter writes frames to one connection; it is safe for concurrent
// use, so stdout and stderr copiers can share it.
type FrameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewFrameWriter returns a FrameWriter on w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes one frame; p must be at most MaxFrame bytes.
func (fw *FrameWriter) WriteFrame(t FrameType, p []byte) error {
	if len(p) > MaxFrame {
		return fmt.Errorf("frame of %d bytes, the limit is %d", len(p), MaxFrame)
	}
	b := make([]byte, frameHeader+len(p))
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:], uint32(len(p)))
	copy(b[frameHeader:], p)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	_, err := fw.w.Write(b)
	return err
}

// Stream returns an io.Writer whose writes become frames of type t, split at
// MaxFrame.
func (fw *FrameWriter) Stream(t FrameType) io.Writer { return streamWriter{fw, t} }

type streamWriter struct {
	fw *FrameWriter
	t  FrameType
}

func (s streamWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), MaxFrame)
		if err := s.fw.WriteFrame(s.t, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// ResizePayload encodes a terminal size.
func ResizePayload(rows, cols uint16) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, rows)
	binary.BigEndian.PutUint16(b[2:], cols)
	return b
}

// ParseResize decodes a FrameResize payload.
func ParseResize(p []byte) (rows, cols uint16) {
	return binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
}

// SignalPayload encodes a signal number.
func SignalPayload(sig int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(sig)) }

// ParseSignal decodes a FrameSignal payload.
func ParseSignal(p []byte) int { return int(binary.BigEndian.Uint32(p)) }
