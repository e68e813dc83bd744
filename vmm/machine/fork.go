package machine

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// Fork makes a child of a paused machine in this process: its state is
// saved, its memory frozen (memory.RAM.Freeze: the first time its memory
// file becomes read-only and the parent is remapped MAP_PRIVATE in place;
// later, the pages it wrote since go to a new layer), and the child maps the
// same layers MAP_PRIVATE. Both then write to private copies. The cost
// follows the pages written since the parent's last fork, not the size of
// guest memory. Forks of forks work.
//
// The parent stays paused and the child is Created; the caller Starts the
// child and Resumes the parent. cfg is the child's host side, as for Restore.
// SaveFork and RestoreDir do the same across processes.
func (m *Machine) Fork(cfg Config) (*Machine, *snapshot.State, error) {
	st, err := m.Snapshot()
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := m.ram.Freeze(""); err != nil {
		return nil, nil, fmt.Errorf("machine: fork: %w", err)
	}
	ram, err := m.ram.Clone()
	if err != nil {
		return nil, nil, fmt.Errorf("machine: fork: %w", err)
	}
	child, err := Restore(cfg, st, ram)
	if err != nil {
		return nil, nil, err
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
