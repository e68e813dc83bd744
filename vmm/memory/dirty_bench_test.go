package memory

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkDirty: the cost of finding a private RAM's written pages, by
// PAGEMAP_SCAN and by reading /proc/self/pagemap, for 256 MiB and 4 GiB
// with the same 1 MiB (256 pages) written.
func BenchmarkDirty(b *testing.B) {
	for _, size := range []uint64{256 << 20, 4 << 30} {
		m, err := New(size, Options{Dir: os.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := m.Freeze(""); err != nil {
			b.Fatal(err)
		}
		for i := range uint64(256) {
			m.host[4<<20+i*2*PageSize] = 1 // every other page: 256 runs
		}
		pm, err := os.Open("/proc/self/pagemap")
		if err != nil {
			b.Fatal(err)
		}
		for name, f := range map[string]func(*os.File) ([]Run, error){"scan": m.dirtyScan, "pagemap": m.dirtyPagemap} {
			b.Run(fmt.Sprintf("%s-%dMiB", name, size>>20), func(b *testing.B) {
				for b.Loop() {
					runs, err := f(pm)
					if err != nil {
						b.Skip(err)
					}
					if len(runs) != 256 {
						b.Fatalf("%d runs, want 256", len(runs))
					}
				}
			})
		}
		pm.Close()
		m.Close()
	}
}
