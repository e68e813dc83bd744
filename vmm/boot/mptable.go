package boot

import (
	"encoding/binary"
	"fmt"
)

// Intel MultiProcessor Specification 1.4 tables. Without ACPI, Linux
// (CONFIG_X86_MPPARSE) learns the CPUs, the IOAPIC and the interrupt routing
// from these.
const (
	mpFloatSig  = "_MP_"
	mpConfigSig = "PCMP"
	mpSpecRev   = 4 // 1.4

	mpConfigHeaderSize = 44
	mpProcEntrySize    = 20
	mpEntrySize        = 8 // bus, IOAPIC, I/O and local interrupt entries

	mpEntryProc   = 0
	mpEntryBus    = 1
	mpEntryIOAPIC = 2
	mpEntryIOInt  = 3
	mpEntryLocInt = 4

	mpIntINT    = 0
	mpIntNMI    = 1
	mpIntExtINT = 3

	mpCPUEnabled = 1 << 0
	mpCPUBSP     = 1 << 1
	// CPU signature family 6 and feature flags FPU|APIC: informational for
	// Linux, which reads the real values from CPUID.
	mpCPUSignature = 0x600
	mpCPUFeatures  = 1<<0 | 1<<9

	lapicVersion  = 0x14 // integrated xAPIC
	ioapicVersion = 0x11
	ioapicPins    = 24 // KVM's IOAPIC; covers the virtio-mmio GSIs 5..20
	mpAllLAPICs   = 0xff
)

// mpFixedSize is the configuration table without processor entries: header,
// one bus, one IOAPIC, ioapicPins I/O interrupt entries, two local ones.
const mpFixedSize = mpConfigHeaderSize + mpEntrySize*(2+ioapicPins+2)

// MaxCPUs is the most vCPUs the MP table describes: APIC IDs are 8 bits, 255
// is the broadcast ID and the IOAPIC takes ID = cpus; the space between
// MPConfigAddr and the floating pointer holds more (TestMPTableCapacity).
const MaxCPUs = 254

// WriteMPTable writes the MP floating pointer at MPTableAddr and the
// configuration table at MPConfigAddr for cpus vCPUs with APIC IDs
// 0..cpus-1, vCPU 0 the bootstrap processor. ISA IRQ n is routed to IOAPIC
// pin n for every pin, so the virtio-mmio GSIs need no overrides.
func WriteMPTable(mem Memory, cpus int) error {
	t, err := mpConfigTable(cpus)
	if err != nil {
		return err
	}
	if err := writeAt(mem, MPConfigAddr, t); err != nil {
		return fmt.Errorf("mp config table: %w", err)
	}
	if err := writeAt(mem, MPTableAddr, mpFloatingPointer()); err != nil {
		return fmt.Errorf("mp floating pointer: %w", err)
	}
	return nil
}

func mpFloatingPointer() []byte {
	f := make([]byte, MPFloatSize)
	copy(f, mpFloatSig)
	binary.LittleEndian.PutUint32(f[4:], MPConfigAddr)
	f[8] = MPFloatSize / 16 // length in 16-byte paragraphs
	f[9] = mpSpecRev
	// Feature bytes 1-5 zero: a configuration table is present, and the
	// IMCR is absent (virtual-wire mode).
	f[10] = checksum(f)
	return f
}

func mpConfigTable(cpus int) ([]byte, error) {
	if cpus < 1 || cpus > MaxCPUs {
		return nil, fmt.Errorf("%w: %d (want 1..%d)", ErrCPUs, cpus, MaxCPUs)
	}
	size := mpFixedSize + mpProcEntrySize*cpus
	if size > MPTableAddr-MPConfigAddr {
		return nil, fmt.Errorf("%w: an MP table for %d vCPUs needs %d bytes, %d fit", ErrCPUs, cpus, size, MPTableAddr-MPConfigAddr)
	}
	le := binary.LittleEndian
	t := make([]byte, size)
	copy(t, mpConfigSig)
	le.PutUint16(t[4:], uint16(size))
	t[6] = mpSpecRev
	copy(t[8:16], "BOXD    ")
	copy(t[16:28], "BOXD MICROVM")
	le.PutUint16(t[34:], uint16(cpus+2+ioapicPins+2))
	le.PutUint32(t[36:], LAPICAddr)

	o := mpConfigHeaderSize
	for id := range cpus {
		e := t[o : o+mpProcEntrySize]
		e[0] = mpEntryProc
		e[1] = uint8(id)
		e[2] = lapicVersion
		e[3] = mpCPUEnabled
		if id == 0 {
			e[3] |= mpCPUBSP
		}
		le.PutUint32(e[4:], mpCPUSignature)
		le.PutUint32(e[8:], mpCPUFeatures)
		o += mpProcEntrySize
	}

	const busISA = 0
	ioapicID := uint8(cpus) // first ID after the CPUs
	e := t[o : o+mpEntrySize]
	e[0], e[1] = mpEntryBus, busISA
	copy(e[2:], "ISA   ")
	o += mpEntrySize

	e = t[o : o+mpEntrySize]
	e[0], e[1], e[2], e[3] = mpEntryIOAPIC, ioapicID, ioapicVersion, 1 // enabled
	le.PutUint32(e[4:], IOAPICAddr)
	o += mpEntrySize

	for pin := range uint8(ioapicPins) {
		e = t[o : o+mpEntrySize]
		// Flags 0: polarity and trigger conform to the bus (ISA: edge, high).
		e[0], e[1], e[4], e[5], e[6], e[7] = mpEntryIOInt, mpIntINT, busISA, pin, ioapicID, pin
		o += mpEntrySize
	}

	// The PIC's output on LINT0 (virtual-wire mode), NMI on LINT1.
	for lint, typ := range []uint8{mpIntExtINT, mpIntNMI} {
		e = t[o : o+mpEntrySize]
		e[0], e[1], e[4], e[5], e[6], e[7] = mpEntryLocInt, typ, busISA, 0, mpAllLAPICs, uint8(lint)
		o += mpEntrySize
	}

	t[7] = checksum(t)
	return t, nil
}

// checksum returns the byte that makes b sum to zero (mod 256), given that
// the checksum field in b is still zero.
func checksum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return -s
}
