package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFrameRoundTrip(t *testing.T) {
	frames := []Frame{
		{Type: TypeHello, Payload: []byte(`{"major":1}`)},
		{Type: TypeOpen, Channel: 1, Payload: []byte(`{"op":"ping"}`)},
		{Type: TypeReply, Channel: 7, Payload: []byte(`{}`)},
		{Type: TypeData, Stream: StreamStderr, Channel: 1 << 31, Payload: bytes.Repeat([]byte{0xAA}, MaxDataChunk)},
		{Type: TypeEOF, Stream: StreamStdin, Channel: 2, Payload: []byte{}},
		{Type: TypeWindow, Stream: StreamStdout, Channel: 3, Payload: []byte{0, 1, 0, 0}},
		{Type: TypeControl, Channel: 4, Payload: []byte(`{"signal":2}`)},
		{Type: TypeClose, Channel: 0xFFFFFFFF, Payload: []byte(`{}`)},
	}
	var stream []byte
	for _, f := range frames {
		var err error
		stream, err = AppendFrame(stream, f)
		if err != nil {
			t.Fatalf("AppendFrame(%v): %v", f.Type, err)
		}
	}
	r := NewReader(bytes.NewReader(stream))
	rest := stream
	for _, want := range frames {
		got, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Reader (-want +got):\n%s", diff)
		}
		got, n, err := DecodeFrame(rest)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("DecodeFrame (-want +got):\n%s", diff)
		}
		rest = rest[n:]
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("after the last frame: %v", err)
	}
}

func header(n uint32, typ Type, stream Stream, reserved uint16, ch uint32) []byte {
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), byte(typ), byte(stream),
		byte(reserved >> 8), byte(reserved), byte(ch >> 24), byte(ch >> 16), byte(ch >> 8), byte(ch)}
}

func TestDecodeFrameRejects(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"short header", header(0, TypeOpen, 0, 0, 1)[:11], ErrShortFrame},
		{"short payload", append(header(4, TypeOpen, 0, 0, 1), 1, 2), ErrShortFrame},
		{"too large", header(MaxPayload+1, TypeOpen, 0, 0, 1), ErrFrameTooLarge},
		{"type zero", header(0, 0, 0, 0, 1), ErrMalformed},
		{"unknown type", header(0, typeLimit, 0, 0, 1), ErrMalformed},
		{"reserved", header(0, TypeOpen, 0, 1, 1), ErrMalformed},
		{"hello off channel 0", header(0, TypeHello, 0, 0, 1), ErrMalformed},
		{"open on channel 0", header(0, TypeOpen, 0, 0, 0), ErrMalformed},
		{"stream on open", header(0, TypeOpen, 1, 0, 1), ErrMalformed},
		{"bad stream", append(header(1, TypeData, 3, 0, 1), 0), ErrMalformed},
		{"empty data", header(0, TypeData, 1, 0, 1), ErrMalformed},
		{"huge data", header(MaxDataChunk+1, TypeData, 1, 0, 1), ErrMalformed},
		{"eof with payload", append(header(1, TypeEOF, 1, 0, 1), 0), ErrMalformed},
		{"short window", append(header(3, TypeWindow, 1, 0, 1), 0, 0, 1), ErrMalformed},
		{"zero window", append(header(4, TypeWindow, 1, 0, 1), 0, 0, 0, 0), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := DecodeFrame(tt.b); !errors.Is(err, tt.want) {
				t.Errorf("DecodeFrame: %v, want %v", err, tt.want)
			}
			if tt.want == ErrShortFrame {
				return
			}
			if _, err := NewReader(bytes.NewReader(tt.b)).Next(); !errors.Is(err, tt.want) {
				t.Errorf("Reader: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestReaderAllocatesAfterValidation: a header claiming a huge payload is
// refused before any buffer grows.
func TestReaderAllocatesAfterValidation(t *testing.T) {
	r := NewReader(bytes.NewReader(header(0xFFFFFFFF, TypeOpen, 0, 0, 1)))
	if _, err := r.Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatal(err)
	}
	if cap(r.buf) != 0 {
		t.Errorf("buffer grew to %d", cap(r.buf))
	}
}

func FuzzDecodeFrame(f *testing.F) {
	seed, _ := AppendFrame(nil, Frame{Type: TypeOpen, Channel: 1, Payload: []byte(`{"op":"exec","args":{"argv":["true"]}}`)})
	f.Add(seed)
	seed, _ = AppendFrame(nil, Frame{Type: TypeWindow, Stream: 1, Channel: 9, Payload: []byte{0, 0, 1, 0}})
	f.Add(seed)
	f.Add(header(5, TypeData, 2, 0, 3))
	f.Add(header(0xFFFFFFFF, TypeHello, 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := DecodeFrame(b)
		if err != nil {
			return
		}
		if n < HeaderSize || n > len(b) || len(fr.Payload) != n-HeaderSize {
			t.Fatalf("consumed %d of %d with payload %d", n, len(b), len(fr.Payload))
		}
		// What decodes must re-encode to the same bytes.
		again, err := AppendFrame(nil, fr)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded %x, decoded from %x", again, b[:n])
		}
		r := NewReader(bytes.NewReader(b))
		if _, err := r.Next(); err != nil {
			t.Fatalf("Reader disagrees: %v", err)
		}
	})
}
