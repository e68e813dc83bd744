package machine

import (
	"errors"
	"fmt"

	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// Standby is a machine built ahead of a restore or fork: KVM VM, memory
// slots over placeholder memory, vCPUs and devices, all of which cost time
// that grows with the guest's size (registering a 4 GiB memory slot takes
// ~1 ms on this host against ~0.1 ms for 256 MiB, with tails of tens of ms).
// Built while the parent still runs, it leaves a fork's pause window only the
// state save, the memory freeze and the state restore: its snapshot's
// memory is mapped over the placeholder in place, so the slots stay valid.
//
// A Standby is used once, by RestoreDir or Fork; Close discards an unused one.
type Standby struct {
	m *Machine // nil once used
}

// NewStandby builds a machine for a snapshot of cfg.CPUs vCPUs and
// cfg.MemMiB of memory (cfg.Load is ignored; virtio devices must be those of
// the snapshot to come, as for Restore). Its placeholder memory is a sparse
// file (in cfg.MemDir, or a memfd), never touched.
func NewStandby(cfg Config) (*Standby, error) {
	cfg.Load = func(*memory.RAM, *kvm.VCPU, string) error { return nil }
	m, err := New(cfg)
	if err != nil {
		return nil, fmt.Errorf("machine: standby: %w", err)
	}
	// Quiesced from the start, as a restored machine: nothing runs before Start.
	m.pauseDevices()
	return &Standby{m: m}, nil
}

// Close discards an unused standby machine.
func (s *Standby) Close() error {
	if s.m == nil {
		return nil
	}
	m := s.m
	s.m = nil
	return m.Close()
}

// take hands the standby machine over after checking it fits st.
func (s *Standby) take(st *snapshot.State) (*Machine, error) {
	if s.m == nil {
		return nil, errors.New("machine: standby already used")
	}
	if len(st.VCPUs) != len(s.m.kvcpus) || st.MemSize != s.m.ram.Size() {
		return nil, fmt.Errorf("machine: standby has %d vCPUs and %d bytes of memory, snapshot %d and %d", len(s.m.kvcpus), s.m.ram.Size(), len(st.VCPUs), st.MemSize)
	}
	m := s.m
	s.m = nil
	return m, nil
}

// RestoreDir is machine.RestoreDir into the standby machine: the directory
// is read and validated first (a refused directory leaves the standby
// usable), then the memory layers are mapped over the placeholder and the
// state restored. On a later error the machine is closed. Layers are linked
// into the standby's cfg.MemDir and cfg.LayerDir, as for RestoreDir.
func (s *Standby) RestoreDir(dir string) (*Machine, error) {
	st, man, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m, err := s.take(st)
	if err != nil {
		return nil, err
	}
	if err := m.ram.Replace(dir, man, m.cfg.memOptions()); err != nil {
		m.Close()
		return nil, fmt.Errorf("machine: restore %s: %w", dir, err)
	}
	if err := m.restore(st); err != nil {
		m.Close()
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	return m, nil
}

// Fork is (*Machine).Fork into the standby machine: parent must be paused,
// and stays paused; the child is Created.
func (s *Standby) Fork(parent *Machine) (*Machine, *snapshot.State, error) {
	st, err := parent.Snapshot()
	if err != nil {
		return nil, nil, err
	}
	m, err := s.take(st)
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := parent.ram.Freeze(""); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("machine: fork: %w", err)
	}
	if err := m.ram.Adopt(parent.ram); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("machine: fork: %w", err)
	}
	if err := m.restore(st); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("machine: fork: %w", err)
	}
	return m, st, nil
}
