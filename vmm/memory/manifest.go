package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"slices"
	"strings"
)

// A Manifest describes a snapshot's guest memory as layers of files: Base is
// mapped over the whole range [0, Size) of RAM offsets (the flat offset space
// of Layout, the same as a RAM's backing file), then each extent is mapped
// over it. Extents are sorted, do not overlap and are page-aligned, so the
// order they are mapped in does not matter and each becomes one host mapping.
//
// A file is a plain name of a file in the manifest's directory or, for a
// layer that could not be linked into that directory (it is on another
// filesystem), the absolute path of the writing VM's own link to it (see
// Options.LayerDir), valid while that VM exists.
type Manifest struct {
	Size    uint64
	Base    string
	Extents []Extent
}

// Extent maps [FileOffset, FileOffset+Len) of File at RAM offset Offset.
type Extent struct {
	Offset     uint64
	Len        uint64
	File       string
	FileOffset uint64
}

// Manifest encoding limits and constants (docs/snapshot-format.md).
const (
	ManifestMagic = "BOXDMEM\x00"
	// ManifestVersion is the newest encoding this build reads and writes.
	// Version 2 is version 1 with absolute layer paths allowed; Encode
	// writes version 1 when the manifest has none, so that older builds
	// still read it, and a manifest has exactly one encoding.
	ManifestVersion = 2
	// MaxExtents bounds the host mappings a manifest can ask for, well
	// under the kernel's default vm.max_map_count (65530) shared by the
	// whole monitor.
	MaxExtents = 16384
	// MaxLayerFiles bounds the files one manifest refers to.
	MaxLayerFiles = 1024
	// MaxFileName bounds a layer file's name.
	MaxFileName = 64
	// MaxLayerPath bounds an absolute layer path (version 2); with the
	// other limits it keeps every valid manifest under 1 MiB.
	MaxLayerPath   = 512
	manifestHeader = 16 // magic, version, CRC32C of the rest
	fileRecord     = 2  // u16 name length
	extentRecord   = 28 // u64 offset, u64 length, u32 file index, u64 file offset
)

// PageSize is the granularity of layers and dirty tracking.
const PageSize = 4096

// ErrManifest is wrapped by every error for a manifest that is not valid
// (foreign, corrupt, out of range, or naming files it may not).
var ErrManifest = errors.New("memory: invalid memory manifest")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// validName accepts plain file names: no separators, no leading dot (so no
// "." or ".." and nothing hidden), so a manifest can only name files inside
// its own directory.
func validName(s string) error {
	if s == "" || len(s) > MaxFileName || s[0] == '.' {
		return fmt.Errorf("file name %q: want 1..%d bytes, not starting with a dot", s, MaxFileName)
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("file name %q: byte %q not allowed", s, c)
		}
	}
	return nil
}

// validRef accepts what a manifest may name: a plain name (validName), or a
// clean absolute path (no ".", ".." or empty components, no control bytes)
// whose last component is a valid name. MapManifest still refuses anything
// but a regular file, and follows no symbolic link as the last component.
func validRef(s string) error {
	if !strings.HasPrefix(s, "/") {
		return validName(s)
	}
	if len(s) > MaxLayerPath {
		return fmt.Errorf("layer path of %d bytes: limit %d", len(s), MaxLayerPath)
	}
	if filepath.Clean(s) != s || slices.Contains(strings.Split(s, "/"), "..") {
		return fmt.Errorf("layer path %q: not a clean absolute path", s)
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("layer path %q: control byte %#x", s, c)
		}
	}
	if err := validName(filepath.Base(s)); err != nil {
		return fmt.Errorf("layer path %q: %v", s, err)
	}
	return nil
}

// version is the encoding version m needs: 2 if it names a file by
// absolute path, else 1.
func (m *Manifest) version() uint32 {
	for _, f := range m.Files() {
		if strings.HasPrefix(f, "/") {
			return 2
		}
	}
	return 1
}

// Validate checks what a mapping relies on: a whole-page size of at least
// 1 MiB, valid names or absolute paths (validRef), page-aligned extents inside [0, Size), sorted and not
// overlapping, within the limits above. File lengths are checked by
// MapManifest, which has the files.
func (m *Manifest) Validate() error {
	if m.Size < 1<<20 || m.Size%PageSize != 0 {
		return fmt.Errorf("%w: size %d: want a multiple of %d, at least 1 MiB", ErrManifest, m.Size, PageSize)
	}
	if err := validRef(m.Base); err != nil {
		return fmt.Errorf("%w: base: %v", ErrManifest, err)
	}
	if len(m.Extents) > MaxExtents {
		return fmt.Errorf("%w: %d extents, limit %d", ErrManifest, len(m.Extents), MaxExtents)
	}
	files := map[string]bool{m.Base: true}
	var end uint64
	for i, e := range m.Extents {
		if err := validRef(e.File); err != nil {
			return fmt.Errorf("%w: extent %d: %v", ErrManifest, i, err)
		}
		files[e.File] = true
		if e.Len == 0 || e.Offset%PageSize != 0 || e.Len%PageSize != 0 || e.FileOffset%PageSize != 0 {
			return fmt.Errorf("%w: extent %d [%#x +%#x) from %#x: want whole pages", ErrManifest, i, e.Offset, e.Len, e.FileOffset)
		}
		if e.Offset > m.Size || e.Len > m.Size-e.Offset {
			return fmt.Errorf("%w: extent %d [%#x +%#x) outside [0, %#x)", ErrManifest, i, e.Offset, e.Len, m.Size)
		}
		if e.FileOffset > 1<<62 || e.Len > 1<<62 {
			return fmt.Errorf("%w: extent %d: file offset %#x out of range", ErrManifest, i, e.FileOffset)
		}
		if e.Offset < end {
			return fmt.Errorf("%w: extent %d at %#x overlaps or precedes the previous one (ends %#x)", ErrManifest, i, e.Offset, end)
		}
		end = e.Offset + e.Len
	}
	if len(files) > MaxLayerFiles {
		return fmt.Errorf("%w: %d files, limit %d", ErrManifest, len(files), MaxLayerFiles)
	}
	return nil
}

// Files lists the distinct files the manifest names, base first, then in
// order of first use.
func (m *Manifest) Files() []string {
	out := []string{m.Base}
	for _, e := range m.Extents {
		if !slices.Contains(out, e.File) {
			out = append(out, e.File)
		}
	}
	return out
}

// Encode returns the manifest's file form:
//
//	magic "BOXDMEM\0", u32 version, u32 CRC32C of everything after these 16 bytes,
//	u64 size, u32 nfile, nfile × (u16 len, name)   file 0 is the base; a name
//	                                               or (version 2) an absolute path
//	u32 nextent, nextent × (u64 offset, u64 len, u32 file index, u64 file offset)
func (m *Manifest) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	files := m.Files()
	le := binary.LittleEndian
	b := make([]byte, manifestHeader, 1024)
	copy(b, ManifestMagic)
	le.PutUint32(b[8:], m.version())
	b = le.AppendUint64(b, m.Size)
	b = le.AppendUint32(b, uint32(len(files)))
	for _, f := range files {
		b = le.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	b = le.AppendUint32(b, uint32(len(m.Extents)))
	for _, e := range m.Extents {
		b = le.AppendUint64(b, e.Offset)
		b = le.AppendUint64(b, e.Len)
		b = le.AppendUint32(b, uint32(slices.Index(files, e.File)))
		b = le.AppendUint64(b, e.FileOffset)
	}
	le.PutUint32(b[12:], crc32.Checksum(b[manifestHeader:], castagnoli))
	return b, nil
}

// DecodeManifest parses and validates a manifest. Every count is checked
// against its limit and the bytes left before anything is allocated for it.
func DecodeManifest(b []byte) (*Manifest, error) {
	le := binary.LittleEndian
	if len(b) < manifestHeader || string(b[:8]) != ManifestMagic {
		return nil, fmt.Errorf("%w: not a boxd memory manifest", ErrManifest)
	}
	v := le.Uint32(b[8:])
	if v < 1 || v > ManifestVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads 1 to %d", ErrManifest, v, ManifestVersion)
	}
	if got, want := crc32.Checksum(b[manifestHeader:], castagnoli), le.Uint32(b[12:]); got != want {
		return nil, fmt.Errorf("%w: checksum %#x, want %#x (corrupt file)", ErrManifest, got, want)
	}
	p := b[manifestHeader:]
	short := fmt.Errorf("%w: truncated", ErrManifest)
	if len(p) < 12 {
		return nil, short
	}
	m := &Manifest{Size: le.Uint64(p)}
	nf := le.Uint32(p[8:])
	p = p[12:]
	if nf < 1 || nf > MaxLayerFiles || uint64(nf)*fileRecord > uint64(len(p)) {
		return nil, fmt.Errorf("%w: %d files (limit %d, %d bytes left)", ErrManifest, nf, MaxLayerFiles, len(p))
	}
	files := make([]string, 0, nf)
	for range nf {
		if len(p) < fileRecord {
			return nil, short
		}
		n := int(le.Uint16(p))
		if len(p)-fileRecord < n {
			return nil, short
		}
		name := string(p[fileRecord : fileRecord+n])
		if slices.Contains(files, name) {
			return nil, fmt.Errorf("%w: file %q listed twice", ErrManifest, name)
		}
		files = append(files, name)
		p = p[fileRecord+n:]
	}
	m.Base = files[0]
	if len(p) < 4 {
		return nil, short
	}
	ne := le.Uint32(p)
	p = p[4:]
	if ne > MaxExtents || uint64(ne)*extentRecord != uint64(len(p)) {
		return nil, fmt.Errorf("%w: %d extents in %d bytes (limit %d, %d bytes each)", ErrManifest, ne, len(p), MaxExtents, extentRecord)
	}
	used := make([]bool, len(files))
	used[0] = true
	m.Extents = make([]Extent, 0, ne)
	for range ne {
		fi := le.Uint32(p[16:])
		if fi >= uint32(len(files)) {
			return nil, fmt.Errorf("%w: extent %d names file %d of %d", ErrManifest, len(m.Extents), fi, len(files))
		}
		used[fi] = true
		m.Extents = append(m.Extents, Extent{Offset: le.Uint64(p), Len: le.Uint64(p[8:]), File: files[fi], FileOffset: le.Uint64(p[20:])})
		p = p[extentRecord:]
	}
	if i := slices.Index(used, false); i >= 0 {
		return nil, fmt.Errorf("%w: file %q is listed but never used", ErrManifest, files[i])
	}
	if len(m.Extents) == 0 {
		m.Extents = nil
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	// One encoding per manifest: files in order of first use.
	if !slices.Equal(m.Files(), files) {
		return nil, fmt.Errorf("%w: files %q not listed in order of first use", ErrManifest, files)
	}
	if want := m.version(); v != want {
		return nil, fmt.Errorf("%w: version %d for a manifest of version %d (absolute layer paths are version 2 only, and only there)", ErrManifest, v, want)
	}
	return m, nil
}
