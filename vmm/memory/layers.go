package memory

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MapManifest maps the layers man describes, files taken from dir (or from
// the absolute paths it names), as a private RAM: reads come from the layer
// files (lazily, shared with every other mapping of them), writes make
// private copies, the files never change. Files must be regular files
// (symbolic links are refused) long enough for what the manifest maps from
// them.
//
// Each layer file gets a hard link of the RAM's own (removed again when the
// RAM is closed) in the first of opt.Dir and opt.LayerDir on its filesystem,
// so that the RAM can be frozen again (Freeze) after dir, or the VM whose
// link an absolute path names, is gone. A layer on neither filesystem is
// left unlinked; such a RAM depends on where it came from staying.
func MapManifest(dir string, man *Manifest, opt Options) (*RAM, error) {
	dirs, err := opt.linkDirs()
	if err != nil {
		return nil, err
	}
	layers, ext, err := openLayers(dir, man, dirs)
	if err != nil {
		return nil, err
	}
	m, err := mapLayers(man.Size, layers, ext)
	if err != nil {
		return nil, err
	}
	m.linkDirs = dirs
	return m, nil
}

// Replace maps the layers man describes over m in place, as MapManifest
// would map them in a new RAM, and closes m's old files: a VM built ahead of
// time (its KVM memory slots registered over placeholder memory) takes its
// snapshot's memory without new slots. m's old contents are gone. Nothing
// may use m during the call; on error m is unchanged unless the error says
// the mapping failed part way, after which m must be closed. opt says where
// layers are linked, as for MapManifest.
func (m *RAM) Replace(dir string, man *Manifest, opt Options) error {
	if man.Size != m.size {
		return fmt.Errorf("memory: replace: manifest maps %d bytes, RAM has %d", man.Size, m.size)
	}
	dirs, err := opt.linkDirs()
	if err != nil {
		return err
	}
	layers, ext, err := openLayers(dir, man, dirs)
	if err != nil {
		return err
	}
	m.linkDirs = dirs
	return m.install(layers, ext)
}

// Adopt maps src's layers over m in place (as Clone, without a new
// mapping). src must have no private pages (just frozen). Layers src has
// names of its own for get names of m's own in m's link folders.
func (m *RAM) Adopt(src *RAM) error {
	if src.size != m.size {
		return fmt.Errorf("memory: adopt: %d bytes into a RAM of %d", src.size, m.size)
	}
	layers, err := src.dupLayers(m.linkDirs)
	if err != nil {
		return err
	}
	return m.install(layers, slices.Clone(src.extents))
}

// install maps layers (base over everything, then ext) over m and takes
// them as m's; it owns layers, even on error.
func (m *RAM) install(layers []*layer, ext []extent) error {
	flags := mapFlags(true)
	err := m.mapAt(0, m.size, layers[0].f.Fd(), 0, flags)
	for i := 0; err == nil && i < len(ext); i++ {
		err = m.mapAt(ext[i].off, ext[i].n, layers[ext[i].layer].f.Fd(), ext[i].fileOff, flags)
	}
	if err != nil {
		for _, l := range layers {
			l.close()
		}
		return fmt.Errorf("memory: map layers in place (the RAM is unusable now): %w", err)
	}
	_ = unix.Madvise(m.host, unix.MADV_HUGEPAGE) // a hint, as in mapFile
	var errs []error
	for _, l := range m.layers {
		errs = append(errs, l.close())
	}
	m.layers, m.extents, m.private = layers, ext, true
	return errors.Join(errs...)
}

// openLayers opens and checks the files of man in dir (see MapManifest) and
// links them into linkDirs.
func openLayers(dir string, man *Manifest, linkDirs []string) ([]*layer, []extent, error) {
	if err := man.Validate(); err != nil {
		return nil, nil, err
	}
	names := man.Files()
	var layers []*layer
	fail := func(err error) ([]*layer, []extent, error) {
		for _, l := range layers {
			l.close()
		}
		return nil, nil, err
	}
	need := make([]uint64, len(names))
	need[0] = man.Size
	for _, e := range man.Extents {
		i := slices.Index(names, e.File)
		need[i] = max(need[i], e.FileOffset+e.Len)
	}
	for i, name := range names {
		path := name
		if !filepath.IsAbs(name) {
			path = filepath.Join(dir, name)
		}
		f, size, err := openLayerFile(path)
		if err != nil {
			return fail(fmt.Errorf("memory: layer %q: %w", name, err))
		}
		layers = append(layers, &layer{f: f})
		if uint64(size) < need[i] {
			return fail(fmt.Errorf("%w: layer %q holds %d bytes, the manifest maps %d", ErrManifest, name, size, need[i]))
		}
	}
	for _, l := range layers {
		if err := l.keepIn(linkDirs); err != nil {
			return fail(err)
		}
	}
	var ext []extent
	for _, e := range man.Extents {
		ext = append(ext, extent{off: e.Offset, n: e.Len, fileOff: e.FileOffset, layer: slices.Index(names, e.File)})
	}
	return layers, ext, nil
}

// openLayerFile opens path for reading if it is a regular file, without
// following a symbolic link as its last component and without opening
// anything else for real (a FIFO would block the monitor, a device could act
// on the open): an O_PATH descriptor is checked first, then reopened
// through /proc/self/fd, which reopens that same file.
func openLayerFile(path string) (*os.File, int64, error) {
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, 0, err
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG {
		kind := map[uint32]string{unix.S_IFLNK: "a symbolic link", unix.S_IFDIR: "a directory", unix.S_IFIFO: "a FIFO",
			unix.S_IFCHR: "a character device", unix.S_IFBLK: "a block device", unix.S_IFSOCK: "a socket"}[t]
		return nil, 0, fmt.Errorf("%w: %s is %s, not a regular file", ErrManifest, path, cmp.Or(kind, "not a regular file"))
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pfd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	return os.NewFile(uintptr(fd), path), st.Size, nil
}

// keepIn gives l a name of the RAM's own (l.owned) in the first of dirs on
// its filesystem, unless it has one; on none of them it stays without.
func (l *layer) keepIn(dirs []string) error {
	if l.owned != "" || strings.HasPrefix(l.f.Name(), "memfd:") {
		return nil
	}
	for _, d := range dirs {
		p, err := linkUnique(l.f, d, "layer")
		if errors.Is(err, unix.EXDEV) {
			continue
		}
		if err != nil {
			return fmt.Errorf("memory: keep layer %s in %s: %w", l.f.Name(), d, err)
		}
		l.owned = p
		return nil
	}
	return nil
}

// refIn names layer l for a manifest in dir: it is linked in as name, or,
// on another filesystem than dir, named by the absolute path of the RAM's
// own link to it (valid while the RAM has the layer).
func (l *layer) refIn(dir, name string) (string, error) {
	err := linkFD(l.f, filepath.Join(dir, name))
	if err == nil {
		return name, nil
	}
	if !errors.Is(err, unix.EXDEV) {
		return "", fmt.Errorf("link layer %s into %s: %w", l.f.Name(), dir, err)
	}
	if l.owned == "" {
		return "", fmt.Errorf("layer %s is on another filesystem than %s and the VM keeps no link of its own to it: give the VM a layer folder on that filesystem (machine.Config.LayerDir, boxd vmm --layer-dir): %w", l.f.Name(), dir, err)
	}
	return l.owned, nil
}

// dupLayers duplicates m's layer files for another RAM; a layer m has a
// name of its own for gets one for the new RAM in linkDirs.
func (m *RAM) dupLayers(linkDirs []string) ([]*layer, error) {
	var layers []*layer
	fail := func(err error) ([]*layer, error) {
		for _, l := range layers {
			l.close()
		}
		return nil, err
	}
	for _, l := range m.layers {
		fd, err := unix.FcntlInt(l.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("memory: dup layer: %w", err))
		}
		nl := &layer{f: os.NewFile(uintptr(fd), l.f.Name())}
		layers = append(layers, nl)
		if l.owned != "" {
			if err := nl.keepIn(linkDirs); err != nil {
				return fail(err)
			}
		}
	}
	return layers, nil
}

// mapLayers maps the base privately, then each extent over it. It owns
// layers, even on error.
func mapLayers(size uint64, layers []*layer, ext []extent) (*RAM, error) {
	m, err := mapFile(layers[0].f, size, true)
	if err != nil {
		for _, l := range layers[1:] {
			l.close()
		}
		return nil, err
	}
	m.layers[0] = layers[0]
	m.layers = append(m.layers, layers[1:]...)
	m.extents = ext
	for _, e := range ext {
		if err := m.mapAt(e.off, e.n, m.layers[e.layer].f.Fd(), e.fileOff, mapFlags(true)); err != nil {
			m.Close()
			return nil, fmt.Errorf("memory: map layer extent [%#x +%#x): %w", e.off, e.n, err)
		}
	}
	return m, nil
}

// Clone maps m's layers privately again, as a new RAM: a copy of m's
// contents that shares every page with it until either writes. m must have
// no private pages (just frozen, or restored and not written), or the clone
// would miss them. The clone keeps its own links in m's link folders.
func (m *RAM) Clone() (*RAM, error) {
	layers, err := m.dupLayers(m.linkDirs)
	if err != nil {
		return nil, fmt.Errorf("memory: clone: %w", err)
	}
	c, err := mapLayers(m.size, layers, slices.Clone(m.extents))
	if err != nil {
		return nil, err
	}
	c.linkDirs = m.linkDirs
	return c, nil
}

// FreezeStats says what a Freeze did and where its time went.
type FreezeStats struct {
	DirtyBytes uint64 // private pages written to the new layer
	DirtyRuns  int
	Extents    int // in the resulting manifest
	Layers     int // files in the resulting manifest
	Scan       time.Duration
	Write      time.Duration // new layer written, old layers linked
	Remap      time.Duration
}

// Freeze makes files hold m's current contents, and remaps m onto them, so
// that any number of Clones (or MapManifests of the returned manifest, in
// other processes) start from exactly what m holds now, sharing its pages.
//
// A fresh shared RAM freezes its own file: m is remapped private in place and
// the file never changes again. A private RAM writes the pages it holds
// private copies of (Dirty) to a new layer file and maps that file over
// them, so the cost follows the pages written since the last freeze, not the
// size of the RAM.
//
// dir "" keeps everything in this process (a new layer is a memfd). With a
// dir, every file of the returned manifest is linked into or created in dir,
// as mem.0 (the base), mem.1, ...; a layer on another filesystem than dir
// (one restored from a snapshot on disk) is named instead by the absolute
// path of m's own link to it (Options.LayerDir), valid while m has it; with
// no such link Freeze fails and says to give the VM a layer folder. Every
// layer m keeps gets a link of m's own (a new layer too), so m can be
// frozen again after dir is deleted. A memfd-backed RAM cannot be frozen
// into a dir.
//
// The caller keeps everything from writing to m during the call (vCPUs
// paused, devices quiet); host addresses do not change, so KVM memory slots
// stay valid.
func (m *RAM) Freeze(dir string) (*Manifest, FreezeStats, error) {
	var st FreezeStats
	if dir != "" && slices.ContainsFunc(m.layers, func(l *layer) bool { return strings.HasPrefix(l.f.Name(), "memfd:") }) {
		return nil, st, errors.New("memory: freeze: guest memory is a memfd, which cannot be linked into a snapshot folder; give the VM a memory folder (a tmpfs) to fork or snapshot it across processes")
	}
	if !m.private {
		return m.freezeShared(dir)
	}
	t0 := time.Now()
	dirty, err := m.Dirty()
	if err != nil {
		return nil, st, err
	}
	st.DirtyRuns = len(dirty)
	t1 := time.Now()
	st.Scan = t1.Sub(t0)

	// The new layer goes last; old layers no extent uses any more go.
	var fileOff uint64
	var delta []extent
	for _, r := range dirty {
		delta = append(delta, extent{off: r.Offset, n: r.Len, fileOff: fileOff, layer: len(m.layers)})
		fileOff += r.Len
	}
	st.DirtyBytes = fileOff
	ext := overlay(m.extents, delta)
	if len(ext) > MaxExtents {
		return nil, st, fmt.Errorf("memory: freeze: %d extents would exceed the limit of %d", len(ext), MaxExtents)
	}
	keep, ext := compact(len(m.layers)+1, ext)
	layers := append(slices.Clone(m.layers), nil)

	var nf *os.File
	var nl *layer
	if len(delta) > 0 {
		if nf, err = newLayerFile(dir, fmt.Sprintf("mem.%d", len(keep)-1)); err != nil {
			return nil, st, err
		}
		nl = &layer{f: nf}
		for _, e := range delta {
			if _, err := nf.WriteAt(m.host[e.off:e.off+e.n], int64(e.fileOff)); err != nil {
				nl.close()
				return nil, st, fmt.Errorf("memory: freeze: write layer: %w", err)
			}
		}
		layers[len(layers)-1] = nl
	}
	var refs []string
	if dir != "" {
		for i, li := range keep {
			l := layers[li]
			ref := fmt.Sprintf("mem.%d", i)
			err := l.keepIn(m.linkDirs)
			if err == nil && l != nl {
				ref, err = l.refIn(dir, ref)
			}
			if err != nil {
				if nl != nil {
					nl.close()
				}
				return nil, st, fmt.Errorf("memory: freeze: %w", err)
			}
			refs = append(refs, ref)
		}
	}
	t2 := time.Now()
	st.Write = t2.Sub(t1)

	// From here on m changes. Each mapping replaces private copies by the
	// same bytes from the file, so a failure part way leaves m's contents
	// right; the unmapped runs just stay private.
	var errs []error
	for _, e := range delta {
		if err := m.mapAt(e.off, e.n, nf.Fd(), e.fileOff, mapFlags(true)); err != nil {
			errs = append(errs, fmt.Errorf("memory: freeze: map new layer at %#x: %w", e.off, err))
		}
	}
	var newLayers []*layer
	for li, l := range layers {
		if l == nil {
			continue
		}
		if slices.Contains(keep, li) {
			newLayers = append(newLayers, l)
		} else {
			errs = append(errs, l.close())
		}
	}
	m.layers, m.extents = newLayers, ext
	st.Remap = time.Since(t2)
	st.Extents, st.Layers = len(ext), len(newLayers)
	return m.manifest(refs), st, errors.Join(errs...)
}

func (m *RAM) freezeShared(dir string) (*Manifest, FreezeStats, error) {
	var st FreezeStats
	t0 := time.Now()
	var refs []string
	if dir != "" {
		// The file's own name first: the O_TMPFILE it was created as can
		// be linked only until it has a name, and the snapshot's name goes
		// when the snapshot is deleted.
		l := m.layers[0]
		err := l.keepIn(m.linkDirs)
		var ref string
		if err == nil {
			ref, err = l.refIn(dir, "mem.0")
		}
		if err != nil {
			return nil, st, fmt.Errorf("memory: freeze: %w", err)
		}
		refs = []string{ref}
	}
	t1 := time.Now()
	st.Write = t1.Sub(t0)
	if err := m.Remap(true); err != nil {
		return nil, st, err
	}
	st.Remap = time.Since(t1)
	st.Layers = 1
	return m.manifest(refs), st, nil
}

// manifest names m's layers refs[0], refs[1], ..., or mem.0, mem.1, ... if
// refs is nil.
func (m *RAM) manifest(refs []string) *Manifest {
	name := func(i int) string {
		if refs != nil {
			return refs[i]
		}
		return fmt.Sprintf("mem.%d", i)
	}
	man := &Manifest{Size: m.size, Base: name(0)}
	for _, e := range m.extents {
		man.Extents = append(man.Extents, Extent{Offset: e.off, Len: e.n, File: name(e.layer), FileOffset: e.fileOff})
	}
	return man
}

// Layers is how many files m maps (1 for a fresh RAM).
func (m *RAM) Layers() int { return len(m.layers) }

// overlay puts top over bottom (both sorted, not overlapping): the parts of
// bottom extents top does not cover, and top, sorted, with neighbours that
// continue each other in the same file merged.
func overlay(bottom, top []extent) []extent {
	var out []extent
	j := 0
	for _, b := range bottom {
		for b.n > 0 {
			for j < len(top) && top[j].off+top[j].n <= b.off {
				j++
			}
			if j == len(top) || top[j].off >= b.off+b.n {
				out = append(out, b)
				break
			}
			t := top[j]
			if t.off > b.off {
				out = append(out, extent{off: b.off, n: t.off - b.off, fileOff: b.fileOff, layer: b.layer})
			}
			end := min(b.off+b.n, t.off+t.n)
			b.fileOff += end - b.off
			b.n -= end - b.off
			b.off = end
		}
	}
	out = append(out, top...)
	slices.SortFunc(out, func(a, b extent) int { return cmpU64(a.off, b.off) })
	merged := out[:0]
	for _, e := range out {
		if k := len(merged) - 1; k >= 0 {
			p := &merged[k]
			if p.layer == e.layer && p.off+p.n == e.off && p.fileOff+p.n == e.fileOff {
				p.n += e.n
				continue
			}
		}
		merged = append(merged, e)
	}
	return merged
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// compact keeps layer 0 and the layers some extent uses, out of n, and
// renumbers the extents; keep[i] is the old index of new layer i.
func compact(n int, ext []extent) (keep []int, out []extent) {
	used := make([]bool, n)
	used[0] = true
	for _, e := range ext {
		used[e.layer] = true
	}
	idx := make([]int, n)
	for i, u := range used {
		if u {
			idx[i] = len(keep)
			keep = append(keep, i)
		}
	}
	out = slices.Clone(ext)
	for i := range out {
		out[i].layer = idx[out[i].layer]
	}
	return keep, out
}

// newLayerFile creates the file for a new layer: name in dir, or a memfd.
func newLayerFile(dir, name string) (*os.File, error) {
	if dir == "" {
		fd, err := unix.MemfdCreate("boxd-guest-layer", unix.MFD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("memory: memfd_create: %w", err)
		}
		return os.NewFile(uintptr(fd), "memfd:boxd-guest-layer"), nil
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	return f, nil
}

// linkFD gives the open file f the name path. Through /proc/self/fd, so it
// works for a file whose other names are gone as long as it was made
// linkable (an O_TMPFILE file, or one with a name left).
func linkFD(f *os.File, path string) error {
	return unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
}

// linkUnique links f into dir under a new name prefix-<random>.
func linkUnique(f *os.File, dir, prefix string) (string, error) {
	for range 8 {
		var r [8]byte
		rand.Read(r[:])
		p := filepath.Join(dir, prefix+"-"+hex.EncodeToString(r[:]))
		err := linkFD(f, p)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		return p, err
	}
	return "", errors.New("no free name")
}
