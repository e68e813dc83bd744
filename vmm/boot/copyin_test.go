package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sliceMem is flatMem with Slice, so copyIn reads straight into it.
type sliceMem struct{ flatMem }

func (m sliceMem) Slice(gpa, n uint64) ([]byte, error) {
	if gpa > uint64(len(m.flatMem)) || n > uint64(len(m.flatMem))-gpa {
		return nil, fmt.Errorf("out of range")
	}
	return m.flatMem[gpa : gpa+n : gpa+n], nil
}

func TestCopyInDirectAndBuffered(t *testing.T) {
	src := make([]byte, 3*chunk+123)
	for i := range src {
		src[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		name      string
		off, n    int64
		gpa       uint64
		wantErrIs error
	}{
		{"whole, several chunks", 0, int64(len(src)), HighMemStart, nil},
		{"offset, partial chunk", 5, 1000, HighMemStart + 4096, nil},
		{"past the end of the image", int64(len(src)) - 10, 20, HighMemStart, io.ErrUnexpectedEOF},
		{"outside RAM", 0, 100, 64 * mib, ErrNoSpace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2][]byte
			for i, mem := range []Memory{make(flatMem, 16*mib), sliceMem{make(flatMem, 16*mib)}} {
				err := copyIn(mem, tc.gpa, bytes.NewReader(src), tc.off, tc.n)
				if !errors.Is(err, tc.wantErrIs) {
					t.Fatalf("%T: copyIn error %v, want %v", mem, err, tc.wantErrIs)
				}
				if err != nil {
					continue
				}
				got[i] = make([]byte, tc.n)
				if _, err := mem.ReadAt(got[i], int64(tc.gpa)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.wantErrIs != nil {
				return
			}
			want := src[tc.off : tc.off+tc.n]
			if !bytes.Equal(got[0], want) || !bytes.Equal(got[1], want) {
				t.Errorf("copied bytes differ: buffered %v, direct %v", cmp.Equal(got[0], want), cmp.Equal(got[1], want))
			}
		})
	}
}
