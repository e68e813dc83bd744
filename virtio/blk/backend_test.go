package blk

import (
	"bytes"
	"os"
	"testing"
)

func TestVectored(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	b, err := NewFile(f)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// More segments than IOV_MAX, of uneven sizes, at an offset.
	var bufs [][]byte
	var want []byte
	for i := range maxIOV + 300 {
		seg := bytes.Repeat([]byte{byte(i)}, 1+i%7)
		bufs = append(bufs, seg)
		want = append(want, seg...)
	}
	if err := b.WritevAt(bufs, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := b.ReadAt(got, 4096); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pwritev wrote the wrong bytes: %v", err)
	}
	back := make([][]byte, len(bufs))
	for i, s := range bufs {
		back[i] = make([]byte, len(s))
	}
	if err := b.ReadvAt(back, 4096); err != nil || !bytes.Equal(bytes.Join(back, nil), want) {
		t.Fatalf("preadv read the wrong bytes: %v", err)
	}
	if err := b.ReadvAt([][]byte{make([]byte, 8192)}, 1<<20-4096); err == nil {
		t.Fatal("read past the end succeeded")
	}
}
