package kvm

// ioctl request numbers, computed the way <linux/ioctl.h> does.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	kvmio = 0xAE
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | kvmio<<8 | nr }
func ion(nr uintptr) uintptr            { return ioc(iocNone, nr, 0) }
func iow(nr, size uintptr) uintptr      { return ioc(iocWrite, nr, size) }
func ior(nr, size uintptr) uintptr      { return ioc(iocRead, nr, size) }
func iowr(nr, size uintptr) uintptr     { return ioc(iocRead|iocWrite, nr, size) }

// System ioctls.
var (
	kvmGetAPIVersion       = ion(0x00)
	kvmCreateVM            = ion(0x01)
	kvmGetMSRIndexList     = iowr(0x02, 4)
	kvmCheckExtension      = ion(0x03)
	kvmGetVCPUMmapSize     = ion(0x04)
	kvmGetSupportedCPUID   = iowr(0x05, 8)
	kvmCreateVCPU          = ion(0x41)
	kvmGetDirtyLog         = iow(0x42, 16)
	kvmSetUserMemoryRegion = iow(0x46, 32)
	kvmSetTSSAddr          = ion(0x47)
	kvmSetIdentityMapAddr  = iow(0x48, 8)
	kvmCreateIRQChip       = ion(0x60)
	kvmIRQLine             = iow(0x61, 8)
	kvmGetIRQChip          = iowr(0x62, 520)
	kvmSetIRQChip          = ior(0x63, 520)
	kvmIRQFD               = iow(0x76, 32)
	kvmCreatePIT2          = iow(0x77, 64)
	kvmIOEventFD           = iow(0x79, 64)
	kvmSetClock            = iow(0x7b, 48)
	kvmGetClock            = ior(0x7c, 48)
	kvmGetPIT2             = ior(0x9f, 112)
	kvmSetPIT2             = iow(0xa0, 112)
	kvmEnableCap           = iow(0xa3, 104)
)

// vCPU ioctls.
var (
	kvmRun           = ion(0x80)
	kvmGetRegs       = ior(0x81, 144)
	kvmSetRegs       = iow(0x82, 144)
	kvmGetSregs      = ior(0x83, 312)
	kvmSetSregs      = iow(0x84, 312)
	kvmGetMSRs       = iowr(0x88, 8)
	kvmSetMSRs       = iow(0x89, 8)
	kvmGetFPU        = ior(0x8c, 416)
	kvmSetFPU        = iow(0x8d, 416)
	kvmGetLAPIC      = ior(0x8e, 1024)
	kvmSetLAPIC      = iow(0x8f, 1024)
	kvmSetCPUID2     = iow(0x90, 8)
	kvmGetCPUID2     = iowr(0x91, 8)
	kvmGetMPState    = ior(0x98, 4)
	kvmSetMPState    = iow(0x99, 4)
	kvmGetVCPUEvents = ior(0x9f, 64)
	kvmSetVCPUEvents = iow(0xa0, 64)
	kvmGetDebugRegs  = ior(0xa1, 128)
	kvmSetDebugRegs  = iow(0xa2, 128)
	kvmSetTSCKHz     = ion(0xa2)
	kvmGetTSCKHz     = ion(0xa3)
	kvmGetXSave      = ior(0xa4, 4096)
	kvmSetXSave      = iow(0xa5, 4096)
	kvmGetXCRs       = ior(0xa6, 392)
	kvmSetXCRs       = iow(0xa7, 392)
	kvmKVMClockCtrl  = ion(0xad)
	kvmGetXSave2     = ior(0xcf, 4096)
)

// Capabilities (KVM_CAP_*) the monitor checks.
const (
	CapIRQChip          = 0
	CapUserMemory       = 3
	CapSetTSSAddr       = 4
	CapExtCPUID         = 7
	CapNrVCPUs          = 9
	CapNrMemSlots       = 10
	CapPIT2             = 33
	CapIRQFD            = 32
	CapIOEventFD        = 36
	CapAdjustClock      = 39
	CapVCPUEvents       = 41
	CapDebugRegs        = 50
	CapXSave            = 55
	CapXCRs             = 56
	CapTSCControl       = 60
	CapMaxVCPUs         = 66
	CapTSCDeadlineTimer = 72
	CapImmediateExit    = 136
	CapXSave2           = 208
	CapSplitIRQChip     = 121
	CapX86DisableExits  = 143
)
