package memory

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden manifest in testdata/")

func sampleManifest() *Manifest {
	return &Manifest{Size: 256 << 20, Base: "mem.0", Extents: []Extent{
		{Offset: 0x1000, Len: 0x3000, File: "mem.2", FileOffset: 0},
		{Offset: 0x10000, Len: 0x1000, File: "mem.1", FileOffset: 0x5000},
		{Offset: 0x20000, Len: 0x2000, File: "mem.2", FileOffset: 0x3000},
		{Offset: 0x30000, Len: 0x1000, File: "mem.0", FileOffset: 0x90000},
	}}
}

// sampleManifestV2 names its base by absolute path: a fork of a VM
// restored from a snapshot on disk.
func sampleManifestV2() *Manifest {
	return &Manifest{Size: 256 << 20, Base: "/var/lib/boxd/vms/0123456789ab/layers/layer-0011223344556677", Extents: []Extent{
		{Offset: 0x1000, Len: 0x3000, File: "mem.1", FileOffset: 0},
		{Offset: 0x20000, Len: 0x1000, File: "/dev/shm/boxd/0123456789ab/layer-8899aabbccddeeff", FileOffset: 0x2000},
	}}
}

// Each version's golden file still decodes, and Encode writes a manifest
// in the lowest version that can hold it, byte for byte as before.
func TestManifestGolden(t *testing.T) {
	for _, tc := range []struct {
		file    string
		want    *Manifest
		version uint32
	}{
		{"v1.manifest", sampleManifest(), 1},
		{"v2.manifest", sampleManifestV2(), 2},
	} {
		path := filepath.Join("testdata", tc.file)
		enc, err := tc.want.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(path, enc, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeManifest(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.file, d)
		}
		if !bytes.Equal(enc, b) {
			t.Errorf("%s: Encode no longer writes the golden bytes: bump ManifestVersion", tc.file)
		}
		if v := binary.LittleEndian.Uint32(enc[8:]); v != tc.version {
			t.Errorf("%s: encoded as version %d, want %d", tc.file, v, tc.version)
		}
	}
}

func TestValidateLayerRefs(t *testing.T) {
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{"mem.0", true},
		{"/var/lib/boxd/vms/x/layers/layer-01", true},
		{"/a b/layer", true}, // folders may hold spaces
		{"layers/mem.0", false},
		{"../mem.0", false},
		{"/var/lib/../etc/passwd", false},
		{"/var/./lib/mem", false},
		{"//var/mem", false},
		{"/var//mem", false},
		{"/var/mem/", false},
		{"/", false},
		{"/var/.hidden", false},
		{"/var/..", false},
		{"/var/m\nem", false},
		{"/var/mem\x00", false},
		{"/" + strings.Repeat("d/", MaxLayerPath/2) + "mem", false},
	} {
		err := (&Manifest{Size: 1 << 20, Base: tc.ref}).Validate()
		if (err == nil) != tc.ok {
			t.Errorf("base %q: %v, want ok %v", tc.ref, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrManifest) {
			t.Errorf("base %q: %v is not an ErrManifest", tc.ref, err)
		}
	}
}

// resealManifest recomputes the checksum so a test reaches the structural checks.
func resealManifest(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b[manifestHeader:], castagnoli))
	return b
}

func TestDecodeManifestRefuses(t *testing.T) {
	good, err := sampleManifest().Encode()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	// Offsets in good: header 16, size 8, nfile 4 at 24, files from 28.
	filesEnd := 28 + 3*(2+5)
	ext := filesEnd + 4 // first extent record
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"foreign", []byte("BOXDSNAP\x02\x00\x00\x00\x00\x00\x00\x00")},
		{"bit flip", mod(func(b []byte) []byte { b[40] ^= 1; return b })},
		{"truncated", resealManifest(bytes.Clone(good[:len(good)-1]))},
		{"trailing", resealManifest(append(bytes.Clone(good), 0))},
		{"version", mod(func(b []byte) []byte { le.PutUint32(b[8:], 2); return b })},
		{"size zero", mod(func(b []byte) []byte { le.PutUint64(b[16:], 0); return resealManifest(b) })},
		{"size unaligned", mod(func(b []byte) []byte { le.PutUint64(b[16:], 256<<20+1); return resealManifest(b) })},
		{"no files", mod(func(b []byte) []byte { le.PutUint32(b[24:], 0); return resealManifest(b) })},
		{"huge file count", mod(func(b []byte) []byte { le.PutUint32(b[24:], 1<<31); return resealManifest(b) })},
		{"path in name", mod(func(b []byte) []byte { copy(b[30:], "../.."); return resealManifest(b) })},
		{"slash in name", mod(func(b []byte) []byte { b[31] = '/'; return resealManifest(b) })},
		{"huge extent count", mod(func(b []byte) []byte { le.PutUint32(b[filesEnd:], 1<<30); return resealManifest(b) })},
		{"file index", mod(func(b []byte) []byte { le.PutUint32(b[ext+16:], 3); return resealManifest(b) })},
		{"unused file", mod(func(b []byte) []byte {
			le.PutUint32(b[ext+16:], 0)
			le.PutUint32(b[ext+28+16:], 0)
			return resealManifest(b)
		})},
		{"unaligned offset", mod(func(b []byte) []byte { le.PutUint64(b[ext:], 0x1001); return resealManifest(b) })},
		{"unaligned file offset", mod(func(b []byte) []byte { le.PutUint64(b[ext+20:], 8); return resealManifest(b) })},
		{"zero length", mod(func(b []byte) []byte { le.PutUint64(b[ext+8:], 0); return resealManifest(b) })},
		{"past the end", mod(func(b []byte) []byte { le.PutUint64(b[ext+8:], 1<<40); return resealManifest(b) })},
		{"wraps", mod(func(b []byte) []byte { le.PutUint64(b[ext+8:], ^uint64(0)-0xfff); return resealManifest(b) })},
		{"overlap", mod(func(b []byte) []byte { le.PutUint64(b[ext+28:], 0x2000); return resealManifest(b) })},
		{"huge file offset", mod(func(b []byte) []byte { le.PutUint64(b[ext+20:], 1<<63); return resealManifest(b) })},
		{"version 2 without paths", mod(func(b []byte) []byte { le.PutUint32(b[8:], 2); return resealManifest(b) })},
		{"path in version 1", func() []byte {
			b, _ := sampleManifestV2().Encode()
			le.PutUint32(b[8:], 1)
			return resealManifest(b)
		}()},
		{"version 3", mod(func(b []byte) []byte { le.PutUint32(b[8:], 3); return resealManifest(b) })},
		{"relative path", func() []byte {
			b, _ := (&Manifest{Size: 1 << 20, Base: "/a/mem"}).Encode()
			copy(b[30:], "a/mem0") // a path, not absolute: refused in version 2 too
			return resealManifest(b)
		}()},
	} {
		m, err := DecodeManifest(tc.b)
		if err == nil || m != nil || !errors.Is(err, ErrManifest) {
			t.Errorf("%s: DecodeManifest = %v, %v; want an ErrManifest error", tc.name, m != nil, err)
		}
	}
}

// FuzzDecodeManifest: no input panics the decoder, and what it accepts is
// valid and encodes back to the same bytes.
func FuzzDecodeManifest(f *testing.F) {
	good, _ := sampleManifest().Encode()
	f.Add(good)
	one, _ := (&Manifest{Size: 1 << 20, Base: "m"}).Encode()
	f.Add(one)
	v2, _ := sampleManifestV2().Encode()
	f.Add(v2)
	for _, name := range []string{"v1.manifest", "v2.manifest"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
		again, err := m.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted manifest re-encodes differently (%v)", err)
		}
	})
}
