package memory

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MapPrivate maps a backing file of size bytes MAP_PRIVATE as guest RAM: reads
// see the file's pages (loaded lazily and shared with every other mapping of
// the file), writes go to private copies, and the file never changes. This is
// how a restored or forked VM uses its parent's memory file. RAM takes
// ownership of f; callers that keep using the file pass a dup.
func MapPrivate(f *os.File, size uint64) (*RAM, error) {
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("memory: stat memory file: %w", err)
	}
	if uint64(st.Size()) < size {
		f.Close()
		return nil, fmt.Errorf("memory: memory file holds %d bytes, guest needs %d", st.Size(), size)
	}
	return mapFile(f, size, true)
}

// Private reports whether RAM is mapped MAP_PRIVATE.
func (m *RAM) Private() bool { return m.private }

func mapFlags(private bool) int {
	if private {
		return unix.MAP_PRIVATE | unix.MAP_NORESERVE
	}
	return unix.MAP_SHARED | unix.MAP_NORESERVE
}

// Remap replaces the host mapping in place (same host addresses, so KVM's
// memory slots stay valid) with a fresh MAP_PRIVATE or MAP_SHARED mapping of
// the backing file. KVM's MMU notifiers drop the guest's old translations, so
// a running VM continues on the new mapping. Fork uses Remap(true) on the
// parent after its memory file is frozen: from then on the parent's writes
// are private and the file stays as it was at the fork.
//
// Private pages written before the call are discarded: remapping a RAM that
// is already private loses what the guest wrote since it became private, so a
// second fork must first write those pages back to a new memory file (not done
// here). The caller must ensure nothing else (device goroutines, vCPUs in a
// way that matters to it) relies on a write racing with the remap.
func (m *RAM) Remap(private bool) error {
	if len(m.extents) > 0 {
		return errors.New("memory: remap of layered RAM (it would drop its upper layers)")
	}
	if err := m.remap(mapFlags(private)); err != nil {
		return fmt.Errorf("memory: remap %d bytes (private %v): %w", m.size, private, err)
	}
	m.private = private
	_ = unix.Madvise(m.host, unix.MADV_HUGEPAGE) // a hint, as in mapFile
	return nil
}
