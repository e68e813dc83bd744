package boot

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// flatMem is contiguous guest RAM below the MMIO gap, for benchmarks: the
// sparse fakeMem would measure its own page map instead of the loader.
type flatMem []byte

func (m flatMem) Size() uint64 { return uint64(len(m)) }

func (m flatMem) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa > int64(len(m)) || int64(len(p)) > int64(len(m))-gpa {
		return 0, fmt.Errorf("out of range")
	}
	return copy(p, m[gpa:]), nil
}

func (m flatMem) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || gpa > int64(len(m)) || int64(len(p)) > int64(len(m))-gpa {
		return 0, fmt.Errorf("out of range")
	}
	return copy(m[gpa:], p), nil
}

// BenchmarkLoadDebianBzImage measures Load of the host's Debian kernel with a
// 16 MiB initrd into 256 MiB of RAM: the loader's share of boot time.
func BenchmarkLoadDebianBzImage(b *testing.B) {
	paths, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(paths) == 0 {
		b.Skip("no /boot/vmlinuz-*")
	}
	img, err := os.ReadFile(paths[len(paths)-1])
	if err != nil {
		b.Fatal(err)
	}
	initrd := bytes.Repeat([]byte{1}, 16*mib)
	mem := make(flatMem, 256*mib)
	b.SetBytes(int64(len(img) + len(initrd)))
	for b.Loop() {
		_, err := Load(mem, Config{
			Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
			Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
			Cmdline: "console=ttyS0", CPUs: 2,
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
