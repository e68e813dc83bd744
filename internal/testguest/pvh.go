package testguest

import (
	"encoding/binary"
)

// PVHLoadAddr is where PVHKernel's code is loaded and entered.
const PVHLoadAddr = 0x100000

// PVHKernel wraps 32-bit code in the smallest ELF "kernel" boxd's loader
// accepts: one PT_LOAD segment at PVHLoadAddr and a PT_NOTE with the Xen
// PHYS32_ENTRY note pointing at it. It lets monitor tests and benchmarks run
// the real boot path without a Linux kernel.
func PVHKernel(code []byte) []byte {
	const (
		ehdrSize  = 64
		phdrSize  = 56
		noteOff   = ehdrSize + 2*phdrSize
		noteSize  = 12 + 4 + 4 // header, "Xen\0", 32-bit entry
		codeOff   = 0x1000
		ptLoad    = 1
		ptNote    = 4
		xenPhys32 = 18
	)
	le := binary.LittleEndian
	f := make([]byte, codeOff+len(code))
	copy(f, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */})
	le.PutUint16(f[16:], 2)    // ET_EXEC
	le.PutUint16(f[18:], 0x3e) // EM_X86_64
	le.PutUint32(f[20:], 1)
	le.PutUint64(f[24:], PVHLoadAddr) // e_entry (unused by PVH)
	le.PutUint64(f[32:], ehdrSize)    // e_phoff
	le.PutUint16(f[52:], ehdrSize)
	le.PutUint16(f[54:], phdrSize)
	le.PutUint16(f[56:], 2) // e_phnum

	ph := f[ehdrSize:]
	le.PutUint32(ph[0:], ptLoad)
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[8:], codeOff)
	le.PutUint64(ph[16:], PVHLoadAddr)
	le.PutUint64(ph[24:], PVHLoadAddr)
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)))
	le.PutUint64(ph[48:], 0x1000)

	ph = f[ehdrSize+phdrSize:]
	le.PutUint32(ph[0:], ptNote)
	le.PutUint32(ph[4:], 4)
	le.PutUint64(ph[8:], noteOff)
	le.PutUint64(ph[32:], noteSize)
	le.PutUint64(ph[40:], noteSize)
	le.PutUint64(ph[48:], 4)

	n := f[noteOff:]
	le.PutUint32(n[0:], 4) // namesz
	le.PutUint32(n[4:], 4) // descsz
	le.PutUint32(n[8:], xenPhys32)
	copy(n[12:], "Xen\x00")
	le.PutUint32(n[16:], PVHLoadAddr)

	copy(f[codeOff:], code)
	return f
}

// Store32 returns 32-bit code for "mov dword [addr], value".
func Store32(addr, value uint32) []byte {
	b := []byte{0xc7, 0x05}
	b = binary.LittleEndian.AppendUint32(b, addr)
	return binary.LittleEndian.AppendUint32(b, value)
}
