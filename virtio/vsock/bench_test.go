package vsock

import (
	"io"
	"testing"
)

// BenchmarkStream measures one stream's throughput through the device and
// the mock driver (the test guest: 4 KiB rx buffers like Linux, 4 KiB tx
// packets), in each direction. The test guest's own work is included, so
// this is a lower bound on what the device itself sustains; compare runs of
// the same machine, not absolute numbers.
func BenchmarkStream(b *testing.B) {
	const chunk = 64 << 10
	for _, tt := range []struct {
		name string
		opt  gopts
	}{
		{"host-to-guest", gopts{}},
		{"guest-to-host", gopts{}},
		{"guest-to-host-64k-packets", gopts{txPayload: 64 << 10}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			s := newStack(b, Config{BufferSize: 256 << 10}, tt.opt)
			l := s.listen(1024)
			hc, _, err := hostConnect(s.path, 1024)
			if err != nil {
				b.Fatal(err)
			}
			defer hc.Close()
			gc := <-l
			var w interface {
				io.Writer
				CloseWrite() error
			}
			var r io.Reader
			if tt.name == "host-to-guest" {
				w, r = hc, gc
			} else {
				w, r = gc, hc
			}
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			go func() {
				for range b.N {
					if _, err := w.Write(buf); err != nil {
						b.Errorf("write: %v", err)
						break
					}
				}
				w.CloseWrite()
			}()
			n, err := io.Copy(io.Discard, r)
			if err != nil || n != int64(b.N)*chunk {
				b.Fatalf("read %d bytes (%v), want %d", n, err, int64(b.N)*chunk)
			}
		})
	}
}
