package machine

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"
)

// dirtyPages returns ring-3 code that writes one quadword in each of pages
// 4 KiB pages from 4 MiB up, reports done, and spins: the same dirty set
// whatever the guest's memory size.
//
//	mov rdi, 0x400000; mov rcx, pages; mov rbx, benchMMIO
//	loop: mov [rdi], rcx; add rdi, 4096; dec rcx; jnz loop
//	mov [rbx+8], eax; spin: jmp spin
func dirtyPages(pages uint32) []byte {
	code := []byte{0x48, 0xc7, 0xc7, 0x00, 0x00, 0x40, 0x00} // mov rdi, 0x400000
	code = append(code, 0x48, 0xc7, 0xc1)                    // mov rcx, imm32
	code = binary.LittleEndian.AppendUint32(code, pages)
	code = append(code, 0x48, 0xbb)
	code = binary.LittleEndian.AppendUint64(code, benchMMIO)
	code = append(code,
		0x48, 0x89, 0x0f, // mov [rdi], rcx
		0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, // add rdi, 4096
		0x48, 0xff, 0xc9, // dec rcx
		0x75, 0xf1, // jnz loop (-15)
		0x89, 0x43, 0x08, 0xeb, 0xfe)
	return code
}

// benchMMIO is the benchmark guests' report window: in the MMIO gap, free in
// boot/layout.go, so it is not RAM in a 4 GiB guest either.
const benchMMIO = 0xc800_0000

// forkSteps times the monitor's part of one fork, step by step.
type forkSteps struct {
	pause, save, child, restore, remap, resume, total time.Duration
}

// forkOnce builds a parent of memMiB with a small dirty set (untimed), then
// forks it: pause → state save → child RAM mapped MAP_PRIVATE → child VM with
// the state restored → parent remapped private in place → both running.
func forkOnce(b *testing.B, memMiB int) forkSteps {
	b.Helper()
	b.StopTimer()
	parent, rep := newRing3At(b, 1, memMiB, dirtyPages(256), benchMMIO)
	if err := parent.Start(); err != nil {
		b.Fatal(err)
	}
	select {
	case <-rep.done:
	case <-parent.Done():
		b.Fatalf("parent stopped: %+v", parent.Wait())
	}
	var s forkSteps
	b.StartTimer()
	t0 := time.Now()
	if err := parent.Pause(); err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	st, err := parent.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	t2 := time.Now()
	ram := mapCopy(b, parent, st.MemSize)
	t3 := time.Now()
	child, err := Restore(Config{}, st, ram)
	if err != nil {
		b.Fatal(err)
	}
	t4 := time.Now()
	if err := parent.RAM().Remap(true); err != nil {
		b.Fatal(err)
	}
	t5 := time.Now()
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	if err := parent.Resume(); err != nil {
		b.Fatal(err)
	}
	t6 := time.Now()
	s = forkSteps{pause: t1.Sub(t0), save: t2.Sub(t1), child: t3.Sub(t2), restore: t4.Sub(t3), remap: t5.Sub(t4), resume: t6.Sub(t5), total: t6.Sub(t0)}
	b.StopTimer()
	// Both spin once forked: close them now, or every iteration's VMs
	// would share the two cores with the next fork.
	stopAndClose(b, child)
	stopAndClose(b, parent)
	b.StartTimer()
	return s
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// BenchmarkFork forks 256 MiB and 4 GiB guests with the same 1 MiB dirty set,
// interleaved in one run, and reports the medians, p99s and their ratio (the
// cost must not grow with memory size). ns/op covers both forks plus setup.
func BenchmarkFork(b *testing.B) {
	sizes := []int{256, 4096}
	all := map[int][]forkSteps{}
	for b.Loop() {
		for _, mem := range sizes {
			all[mem] = append(all[mem], forkOnce(b, mem))
		}
	}
	med := map[int]time.Duration{}
	for _, mem := range sizes {
		pick := func(f func(forkSteps) time.Duration) []time.Duration {
			var d []time.Duration
			for _, s := range all[mem] {
				d = append(d, f(s))
			}
			return d
		}
		total := pick(func(s forkSteps) time.Duration { return s.total })
		med[mem] = quantile(total, 0.5)
		b.ReportMetric(float64(med[mem].Microseconds()), fmt.Sprintf("µs-p50-%dMiB", mem))
		b.ReportMetric(float64(quantile(total, 0.99).Microseconds()), fmt.Sprintf("µs-p99-%dMiB", mem))
		b.Logf("%d MiB, %d forks, medians: pause %v, save %v, map private %v, restore %v, remap parent %v, start+resume %v, total %v (p99 %v)",
			mem, len(total),
			quantile(pick(func(s forkSteps) time.Duration { return s.pause }), 0.5),
			quantile(pick(func(s forkSteps) time.Duration { return s.save }), 0.5),
			quantile(pick(func(s forkSteps) time.Duration { return s.child }), 0.5),
			quantile(pick(func(s forkSteps) time.Duration { return s.restore }), 0.5),
			quantile(pick(func(s forkSteps) time.Duration { return s.remap }), 0.5),
			quantile(pick(func(s forkSteps) time.Duration { return s.resume }), 0.5),
			med[mem], quantile(total, 0.99))
	}
	b.ReportMetric(float64(med[4096])/float64(med[256]), "ratio-4GiB/256MiB")
}
