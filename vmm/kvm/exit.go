package kvm

import (
	"encoding/binary"
	"fmt"
)

// ExitReason is kvm_run.exit_reason.
type ExitReason uint32

// Exit reasons boxd handles or reports (KVM_EXIT_*).
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "unknown", ExitException: "exception", ExitIO: "io", ExitHypercall: "hypercall",
	ExitDebug: "debug", ExitHLT: "hlt", ExitMMIO: "mmio", ExitIRQWindowOpen: "irq-window-open",
	ExitShutdown: "shutdown", ExitFailEntry: "fail-entry", ExitIntr: "intr", ExitNMI: "nmi",
	ExitInternalError: "internal-error", ExitSystemEvent: "system-event",
}

func (r ExitReason) String() string {
	if s, ok := exitNames[r]; ok {
		return s
	}
	return fmt.Sprintf("exit-%d", uint32(r))
}

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// Exit is one decoded VM exit. Data aliases the vCPU's kvm_run page: for an I/O
// or MMIO read the handler fills it, and the values are handed to the guest on the
// next Run. It is valid only until that Run.
type Exit struct {
	Reason ExitReason

	// ExitIO and ExitMMIO.
	Port  uint16 // I/O port
	Addr  uint64 // MMIO guest-physical address
	Write bool   // guest wrote (OUT / MMIO store)
	Size  int    // access width in bytes
	Count int    // I/O repetitions (REP INS/OUTS); Data holds Size*Count bytes
	Data  []byte

	// ExitFailEntry: hardware_entry_failure_reason. ExitInternalError: suberror.
	// ExitSystemEvent: event type.
	Code uint64
	// ExitInternalError and ExitSystemEvent: extra data words.
	Info []uint64
}

// kvm_run offsets (include/uapi/linux/kvm.h, x86).
const (
	runExitReason = 8
	runUnion      = 32
)

// decodeExit decodes the exit in run. Guest-visible sizes are validated against
// the page so that a bogus kernel value cannot make Data reach outside it.
func decodeExit(run []byte) Exit {
	le := binary.LittleEndian
	e := Exit{Reason: ExitReason(le.Uint32(run[runExitReason:]))}
	u := run[runUnion:]
	switch e.Reason {
	case ExitIO:
		e.Write = u[0] == 1
		e.Size = int(u[1])
		e.Port = le.Uint16(u[2:])
		e.Count = int(le.Uint32(u[4:]))
		off := le.Uint64(u[8:])
		n := uint64(e.Size) * uint64(e.Count)
		if off < uint64(len(run)) && n <= uint64(len(run))-off {
			e.Data = run[off : off+n]
		}
	case ExitMMIO:
		e.Addr = le.Uint64(u[0:])
		n := le.Uint32(u[16:])
		if n > 8 {
			n = 8
		}
		e.Size = int(n)
		e.Count = 1
		e.Data = u[8 : 8+n]
		e.Write = u[20] != 0
	case ExitFailEntry:
		e.Code = le.Uint64(u[0:])
	case ExitInternalError:
		e.Code = uint64(le.Uint32(u[0:]))
		n := min(le.Uint32(u[4:]), 16)
		for i := range n {
			e.Info = append(e.Info, le.Uint64(u[8+8*i:]))
		}
	case ExitSystemEvent:
		e.Code = uint64(le.Uint32(u[0:]))
		n := min(le.Uint32(u[4:]), 16)
		for i := range n {
			e.Info = append(e.Info, le.Uint64(u[8+8*i:]))
		}
	}
	return e
}

func (e Exit) String() string {
	switch e.Reason {
	case ExitIO:
		return fmt.Sprintf("io port=%#x write=%v size=%d count=%d", e.Port, e.Write, e.Size, e.Count)
	case ExitMMIO:
		return fmt.Sprintf("mmio addr=%#x write=%v size=%d", e.Addr, e.Write, e.Size)
	case ExitFailEntry, ExitInternalError, ExitSystemEvent:
		return fmt.Sprintf("%s code=%#x info=%#x", e.Reason, e.Code, e.Info)
	}
	return e.Reason.String()
}
