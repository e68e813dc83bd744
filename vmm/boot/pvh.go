package boot

import (
	"encoding/binary"
	"fmt"
)

// hvm_start_info and friends (xen/include/public/arch-x86/hvm/start_info.h).
const (
	pvhMagic         = 0x336ec578
	pvhVersion       = 1 // version 1 adds the memory map
	pvhInfoSize      = 56
	pvhModlistSize   = 32
	pvhMemmapEntSize = 24
)

// writeStartInfo writes hvm_start_info at PVHInfoAddr, the initrd as the only
// module at PVHModlistAddr and the memory map at PVHMemmapAddr. Without the
// version 1 memory map Linux would ask a Xen hypervisor for one.
func writeStartInfo(mem Memory, initrd Region) error {
	le := binary.LittleEndian
	mm := memoryMap(mem.Size())
	if len(mm) > PVHMemmapMax {
		return fmt.Errorf("%d memory map entries, at most %d fit", len(mm), PVHMemmapMax)
	}
	table := make([]byte, len(mm)*pvhMemmapEntSize)
	for i, e := range mm {
		o := i * pvhMemmapEntSize
		le.PutUint64(table[o:], e.addr)
		le.PutUint64(table[o+8:], e.size)
		le.PutUint32(table[o+16:], e.typ)
	}
	if err := writeAt(mem, PVHMemmapAddr, table); err != nil {
		return fmt.Errorf("pvh memory map: %w", err)
	}

	info := make([]byte, pvhInfoSize)
	le.PutUint32(info[0x00:], pvhMagic)
	le.PutUint32(info[0x04:], pvhVersion)
	le.PutUint64(info[0x18:], CmdlineAddr)
	le.PutUint64(info[0x28:], PVHMemmapAddr)
	le.PutUint32(info[0x30:], uint32(len(mm)))
	if initrd.Size > 0 {
		mod := make([]byte, pvhModlistSize)
		le.PutUint64(mod[0x00:], initrd.Start)
		le.PutUint64(mod[0x08:], initrd.Size)
		if err := writeAt(mem, PVHModlistAddr, mod); err != nil {
			return fmt.Errorf("pvh module list: %w", err)
		}
		le.PutUint32(info[0x0c:], 1)
		le.PutUint64(info[0x10:], PVHModlistAddr)
	}
	if err := writeAt(mem, PVHInfoAddr, info); err != nil {
		return fmt.Errorf("pvh start info: %w", err)
	}
	return nil
}
