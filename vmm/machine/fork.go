package machine

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// Fork makes a child of a paused machine: its state is saved, the child maps
// the parent's memory file MAP_PRIVATE, and the parent's own mapping is
// switched to MAP_PRIVATE in place, so from now on both write to private
// copies and the file keeps the memory as it was at the fork. Nothing is
// copied: the cost does not depend on the size of guest memory.
//
// The parent stays paused and the child is Created; the caller Starts the
// child and Resumes the parent. cfg is the child's host side, as for Restore.
//
// A parent whose RAM is already private (itself a fork, or forked before) is
// refused: its private pages are not in the file, and carrying them into a
// new memory file is not implemented yet.
func (m *Machine) Fork(cfg Config) (*Machine, *snapshot.State, error) {
	if m.ram.Private() {
		return nil, nil, errors.New("machine: fork: guest memory is already private (fork of a fork is not supported yet)")
	}
	st, err := m.Snapshot()
	if err != nil {
		return nil, nil, err
	}
	f, err := dupFile(m.ram.File())
	if err != nil {
		return nil, nil, err
	}
	ram, err := memory.MapPrivate(f, st.MemSize)
	if err != nil {
		return nil, nil, fmt.Errorf("machine: fork: %w", err)
	}
	child, err := Restore(cfg, st, ram)
	if err != nil {
		return nil, nil, err
	}
	if err := m.ram.Remap(true); err != nil {
		child.Close()
		return nil, nil, fmt.Errorf("machine: fork: %w", err)
	}
	return child, st, nil
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("machine: dup memory file: %w", err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
