package vsock

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestHeaderGolden pins the wire layout of struct virtio_vsock_hdr (virtio
// 1.2 §5.10.6): every field at its offset, little endian.
func TestHeaderGolden(t *testing.T) {
	h := header{
		SrcCID: 0x0102030405060708, DstCID: 2, SrcPort: 0x11121314, DstPort: 0x21222324,
		Len: 0x31323334, Type: typeStream, Op: opCreditUpdate, Flags: shutBoth,
		BufAlloc: 0x41424344, FwdCnt: 0x51525354,
	}
	b := make([]byte, HeaderLen)
	h.encode(b)
	got := hex.Dump(b)
	path := filepath.Join("testdata", "header.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("encoded header (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(h, decodeHeader(b)); diff != "" {
		t.Errorf("decode(encode(h)) (-want +got):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	ok := header{SrcCID: 7, DstCID: HostCID, Type: typeStream, Op: opRW, Len: 10}
	tests := []struct {
		name    string
		edit    func(h *header)
		payload uint64
		want    error
	}{
		{"ok", func(h *header) {}, 10, nil},
		{"extra bytes after the payload", func(h *header) {}, 20, nil},
		{"len beyond buffer", func(h *header) {}, 9, errBadLength},
		{"control with len", func(h *header) { h.Op = opRequest }, 10, errBadLength},
		{"wrong source", func(h *header) { h.SrcCID = 8 }, 10, errBadCID},
		{"wrong destination", func(h *header) { h.DstCID = 1 }, 10, errBadCID},
		{"seqpacket", func(h *header) { h.Type = 2 }, 10, errBadType},
		{"op 0", func(h *header) { h.Op = 0 }, 10, errBadOp},
		{"op 8", func(h *header) { h.Op = 8 }, 10, errBadOp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := ok
			tt.edit(&h)
			err := validate(h, 7, tt.payload)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("validate = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestRing drives the ring through wrap-around with a reference FIFO.
func TestRing(t *testing.T) {
	r := newRing(10)
	var ref []byte
	next := byte(0)
	steps := []struct {
		write, read int
	}{
		{7, 0}, {0, 5}, {6, 0}, {2, 3}, {0, 7}, {10, 10}, {3, 1}, {8, 0}, {0, 10},
	}
	for i, st := range steps {
		// Write through writable/commit as the reader goroutine does.
		for left := st.write; left > 0; {
			seg := r.writable()
			if len(seg) == 0 {
				t.Fatalf("step %d: no space with %d free", i, r.Free())
			}
			seg = seg[:min(len(seg), left)]
			for j := range seg {
				seg[j] = next
				ref = append(ref, next)
				next++
			}
			r.commit(len(seg))
			left -= len(seg)
		}
		a, b := r.segments(st.read)
		got := append(append([]byte(nil), a...), b...)
		if !bytes.Equal(got, ref[:st.read]) {
			t.Fatalf("step %d: segments = %v, want %v", i, got, ref[:st.read])
		}
		r.discard(st.read)
		ref = ref[st.read:]
		if r.Len() != len(ref) || r.Free() != 10-len(ref) {
			t.Fatalf("step %d: len %d free %d, want %d", i, r.Len(), r.Free(), len(ref))
		}
	}
	w := newRing(4)
	w.write([]byte("ab"))
	w.discard(1)
	w.write([]byte("cde"))
	a, b := w.segments(4)
	if got := string(a) + string(b); got != "bcde" {
		t.Errorf("write across the end: %q", got)
	}
	if !strings.Contains(string(w.buf), "e") || w.Free() != 0 || w.writable() != nil {
		t.Errorf("full ring: free %d, writable %v", w.Free(), w.writable())
	}
}
