package testguest

import (
	"errors"
	"fmt"

	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
)

// Guest is a one-vCPU VM loaded with a test program.
type Guest struct {
	Sys  *kvm.System
	VM   *kvm.VM
	RAM  *memory.RAM
	VCPU *kvm.VCPU
}

// New creates a VM with RAMSize bytes of RAM, loads code and puts vCPU 0 at
// CodeAddr in long mode at ring (0 or 3). It returns an error wrapping
// kvm.ErrNoKVM when /dev/kvm is unusable, which tests turn into a skip.
func New(code []byte, ring int) (g *Guest, err error) {
	g = &Guest{}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if g.Sys, err = kvm.Open(); err != nil {
		return nil, err
	}
	if g.VM, err = g.Sys.CreateVM(); err != nil {
		return nil, err
	}
	if g.RAM, err = memory.New(RAMSize, memory.Options{}); err != nil {
		return nil, err
	}
	for i, r := range g.RAM.Regions() {
		if err = g.VM.SetUserMemoryRegion(uint32(i), 0, r.GPA, g.RAM.Host(r)); err != nil {
			return nil, err
		}
	}
	if err = Load(g.RAM, code); err != nil {
		return nil, err
	}
	if g.VCPU, err = g.VM.CreateVCPU(0); err != nil {
		return nil, err
	}
	if err = SetupVCPU(g.VCPU, ring); err != nil {
		return nil, fmt.Errorf("testguest: %w", err)
	}
	return g, nil
}

// Close releases everything New created.
func (g *Guest) Close() error {
	var errs []error
	if g.VCPU != nil {
		errs = append(errs, g.VCPU.Close())
	}
	if g.VM != nil {
		errs = append(errs, g.VM.Close())
	}
	if g.RAM != nil {
		errs = append(errs, g.RAM.Close())
	}
	if g.Sys != nil {
		errs = append(errs, g.Sys.Close())
	}
	return errors.Join(errs...)
}
