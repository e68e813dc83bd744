//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

const sampleTrace = `# tracer: nop
#
           boxd-203     [001] d..1.  2210.000001: kvm_exit: vcpu 1 reason npf rip 0xffffffff81001000 info1 0x0000000000000004 info2 0x00000000fee00300 intr_info 0x00000000 error_code 0x00000000
           boxd-203     [001] d..1.  2210.000002: kvm_entry: vcpu 1, rip 0xffffffff81001000
           boxd-203     [001] d..1.  2210.000003: kvm_exit: vcpu 1 reason npf rip 0xffffffff81001000 info1 0x0000000000000004 info2 0x00000000fee00300 intr_info 0x00000000 error_code 0x00000000
 boxd vcpu 0-204     [000] ....1  2210.000004: kvm_apic_accept_irq: apicid 0 vec 236 (Fixed|edge)
`

// The trace summary counts exits per thread by reason and RIP: the line
// that says where a spinning vCPU spins.
func TestSummariseKVMTrace(t *testing.T) {
	got := summariseKVMTrace(sampleTrace, 300*time.Millisecond)
	for _, want := range []string{
		"4 events",
		"tid 203      2 × kvm_exit reason npf rip 0xffffffff81001000",
		"tid 203      1 × kvm_entry",
		"tid 204      1 × kvm_apic_accept_irq",
		"tid 203 exits 2: npf 2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "diagnosis") {
		t.Errorf("a few ordinary exits diagnosed as a livelock:\n%s", got)
	}
}

// The livelock seen in the nested harness (nested page faults at one RIP,
// each injected back as a #PF) is named as such.
func TestSummariseKVMTraceLivelock(t *testing.T) {
	var loop strings.Builder
	for range 200 {
		loop.WriteString(`           boxd-197     [001] .....   192.116252: kvm_exit: vcpu 0 reason npf rip 0xffffffffc046a20c info1 0x000000020000000e info2 0x000000010085afe0 intr_info 0x80000b0e error_code 0x00000010
           boxd-197     [001] .....   192.116262: kvm_inj_exception: #PF (0x10)
           boxd-197     [001] d..1.   192.116264: kvm_entry: vcpu 0, rip 0xffffffffc046a20c[immediate exit]
`)
	}
	got := summariseKVMTrace(loop.String(), time.Second)
	want := "diagnosis: tid 197 livelocked in L1's KVM: 200 nested page faults (reason npf rip 0xffffffffc046a20c) on guest-physical 0x000000010085afe0"
	if !strings.Contains(got, want) {
		t.Errorf("the NPF/#PF loop was not diagnosed; want %q in:\n%s", want, got)
	}
}
