//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// The trace summary counts exits per thread by reason and RIP: the line
// that says where a spinning vCPU spins.
func TestSummariseKVMTrace(t *testing.T) {
	raw := `# tracer: nop
#
           boxd-203     [001] d..1.  2210.000001: kvm_exit: vcpu 1 reason npf rip 0xffffffff81001000 info1 0x0000000000000004 info2 0x00000000fee00300 intr_info 0x00000000 error_code 0x00000000
           boxd-203     [001] d..1.  2210.000002: kvm_entry: vcpu 1, rip 0xffffffff81001000
           boxd-203     [001] d..1.  2210.000003: kvm_exit: vcpu 1 reason npf rip 0xffffffff81001000 info1 0x0000000000000004 info2 0x00000000fee00300 intr_info 0x00000000 error_code 0x00000000
 boxd vcpu 0-204     [000] ....1  2210.000004: kvm_apic_accept_irq: apicid 0 vec 236 (Fixed|edge)
`
	got := summariseKVMTrace(raw, 300*time.Millisecond)
	for _, want := range []string{
		"4 events",
		"tid 203      2 × kvm_exit reason npf rip 0xffffffff81001000",
		"tid 203      1 × kvm_entry",
		"tid 204      1 × kvm_apic_accept_irq",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}
