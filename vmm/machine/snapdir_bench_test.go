package machine

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
)

// redirty returns ring-3 code that writes one quadword in each of pages
// 4 KiB pages from 4 MiB up, reports each finished pass to benchMMIO+0x10,
// and starts over: after two reported passes, every one of those pages has
// been written since any earlier point.
//
//	mov rbx, benchMMIO
//	again: mov rdi, 0x400000; mov rcx, pages
//	loop: mov [rdi], rcx; add rdi, 4096; dec rcx; jnz loop
//	mov [rbx+0x10], eax; jmp again
func redirty(pages uint32) []byte {
	code := binary.LittleEndian.AppendUint64([]byte{0x48, 0xbb}, benchMMIO)
	code = append(code, 0x48, 0xc7, 0xc7, 0x00, 0x00, 0x40, 0x00, 0x48, 0xc7, 0xc1)
	code = binary.LittleEndian.AppendUint32(code, pages)
	return append(code,
		0x48, 0x89, 0x0f, // mov [rdi], rcx
		0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00, // add rdi, 4096
		0x48, 0xff, 0xc9, // dec rcx
		0x75, 0xf1, // jnz loop
		0x89, 0x43, 0x10, // mov [rbx+0x10], eax
		0xeb, 0xde) // jmp again (-34)
}

// passes counts redirty's reports.
type passes struct {
	n  atomic.Int64
	ch chan struct{}
}

func (p *passes) Read(uint64, []byte) {}
func (p *passes) Write(off uint64, _ []byte) {
	if off == 0x10 {
		p.n.Add(1)
		select {
		case p.ch <- struct{}{}:
		default:
		}
	}
}

// waitPasses blocks until k more passes have been reported.
func (p *passes) wait(b testing.TB, m *Machine, k int64) {
	b.Helper()
	want := p.n.Load() + k
	for p.n.Load() < want {
		select {
		case <-p.ch:
		case <-m.Done():
			b.Fatalf("guest stopped: %+v", m.Wait())
		}
	}
}

func watch(b testing.TB, m *Machine) *passes {
	b.Helper()
	p := &passes{ch: make(chan struct{}, 1)}
	if err := m.MMIO.Insert(benchMMIO, 0x1000, p); err != nil {
		b.Fatal(err)
	}
	return p
}

// shmDir is a fresh folder on /dev/shm (a tmpfs: guest memory must not be
// written back to a disk while benchmarks run).
func shmDir(b testing.TB) string {
	b.Helper()
	d, err := os.MkdirTemp("/dev/shm", "boxd-bench-")
	if err != nil {
		b.Skipf("benchmarks need a tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// dirSteps times the monitor's part of one fork through a directory.
type dirSteps struct {
	pause, save, restore, resume, total time.Duration
	scan, write, remap                  time.Duration
	dirty                               uint64
}

type forkCase struct {
	memMiB  int
	pages   uint32 // dirty set
	ofFork  bool   // the parent is itself a fork (private memory)
	standby bool   // the child VM is built (NewStandby) before the pause
	name    string // for metrics
	steps   []dirSteps
}

// forkDirOnce builds the parent (untimed): fresh, or a fork of a fresh VM
// that then dirtied pages; then times pause → SaveFork → RestoreDir → child
// started, parent resumed.
func forkDirOnce(b *testing.B, c *forkCase) {
	b.Helper()
	b.StopTimer()
	shm := shmDir(b)
	parent := newRing3Cfg(b, Config{CPUs: 1, MemMiB: c.memMiB, MemDir: shm}, redirty(c.pages))
	pp := watch(b, parent)
	if err := parent.Start(); err != nil {
		b.Fatal(err)
	}
	pp.wait(b, parent, 1)
	if c.ofFork {
		if err := parent.Pause(); err != nil {
			b.Fatal(err)
		}
		d0 := shm + "/gen0"
		if _, err := SaveFork(parent, d0); err != nil {
			b.Fatal(err)
		}
		child, err := RestoreDir(Config{MemDir: shm}, d0)
		if err != nil {
			b.Fatal(err)
		}
		stopAndClose(b, parent)
		parent, pp = child, watch(b, child)
		if err := parent.Start(); err != nil {
			b.Fatal(err)
		}
		pp.wait(b, parent, 2)
	}
	dir := shm + "/fork"
	var sb *Standby
	if c.standby {
		var err error
		if sb, err = NewStandby(Config{CPUs: 1, MemMiB: c.memMiB, MemDir: shm}); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	t0 := time.Now()
	if err := parent.Pause(); err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	st, err := SaveFork(parent, dir)
	if err != nil {
		b.Fatal(err)
	}
	t2 := time.Now()
	var child *Machine
	if sb != nil {
		child, err = sb.RestoreDir(dir)
	} else {
		child, err = RestoreDir(Config{MemDir: shm}, dir)
	}
	if err != nil {
		b.Fatal(err)
	}
	t3 := time.Now()
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	if err := parent.Resume(); err != nil {
		b.Fatal(err)
	}
	t4 := time.Now()
	b.StopTimer()
	c.steps = append(c.steps, dirSteps{pause: t1.Sub(t0), save: t2.Sub(t1), restore: t3.Sub(t2), resume: t4.Sub(t3), total: t4.Sub(t0),
		scan: st.Freeze.Scan, write: st.Freeze.Write, remap: st.Freeze.Remap, dirty: st.MemoryBytes})
	stopAndClose(b, child)
	stopAndClose(b, parent)
	b.StartTimer()
}

func med(d []time.Duration) time.Duration { return quantile(d, 0.5) }

func pick(s []dirSteps, f func(dirSteps) time.Duration) []time.Duration {
	var d []time.Duration
	for _, x := range s {
		d = append(d, f(x))
	}
	return d
}

// BenchmarkForkDir: the monitor's part of a fork through a snapshot
// directory (pause → SaveFork → RestoreDir → child started, parent
// resumed), for first forks and forks of forks, 256 MiB against 4 GiB with
// the same 1 MiB dirty set, and a fork of a fork with 64 MiB dirty. Cases
// are interleaved in each iteration. Reports medians, p99s and ratios.
func BenchmarkForkDir(b *testing.B) {
	cases := []*forkCase{
		{memMiB: 256, pages: 256, name: "first-256MiB"},
		{memMiB: 4096, pages: 256, name: "first-4GiB"},
		{memMiB: 256, pages: 256, ofFork: true, name: "fof-256MiB-1MiBdirty"},
		{memMiB: 4096, pages: 256, ofFork: true, name: "fof-4GiB-1MiBdirty"},
		{memMiB: 256, pages: 16384, ofFork: true, name: "fof-256MiB-64MiBdirty"},
		{memMiB: 256, pages: 256, standby: true, name: "first-256MiB-standby"},
		{memMiB: 4096, pages: 256, standby: true, name: "first-4GiB-standby"},
		{memMiB: 256, pages: 256, ofFork: true, standby: true, name: "fof-256MiB-standby"},
		{memMiB: 4096, pages: 256, ofFork: true, standby: true, name: "fof-4GiB-standby"},
	}
	for b.Loop() {
		for _, c := range cases {
			forkDirOnce(b, c)
		}
	}
	m := map[string]time.Duration{}
	for _, c := range cases {
		total := pick(c.steps, func(s dirSteps) time.Duration { return s.total })
		m[c.name] = med(total)
		b.ReportMetric(float64(med(total).Microseconds()), "µs-p50-"+c.name)
		b.ReportMetric(float64(quantile(total, 0.99).Microseconds()), "µs-p99-"+c.name)
		b.Logf("%-24s n=%d total p50 %v p99 %v | pause %v, SaveFork %v (scan %v, write %v, remap %v; %d KiB), RestoreDir %v (p99 %v), start+resume %v",
			c.name, len(total), med(total), quantile(total, 0.99),
			med(pick(c.steps, func(s dirSteps) time.Duration { return s.pause })),
			med(pick(c.steps, func(s dirSteps) time.Duration { return s.save })),
			med(pick(c.steps, func(s dirSteps) time.Duration { return s.scan })),
			med(pick(c.steps, func(s dirSteps) time.Duration { return s.write })),
			med(pick(c.steps, func(s dirSteps) time.Duration { return s.remap })),
			c.steps[0].dirty>>10,
			med(pick(c.steps, func(s dirSteps) time.Duration { return s.restore })),
			quantile(pick(c.steps, func(s dirSteps) time.Duration { return s.restore }), 0.99),
			med(pick(c.steps, func(s dirSteps) time.Duration { return s.resume })))
	}
	ratio := func(a, c string) float64 { return float64(m[a]) / float64(m[c]) }
	b.ReportMetric(ratio("first-4GiB", "first-256MiB"), "ratio-first-4GiB/256MiB")
	b.ReportMetric(ratio("fof-4GiB-1MiBdirty", "fof-256MiB-1MiBdirty"), "ratio-fof-4GiB/256MiB")
	b.ReportMetric(ratio("fof-256MiB-64MiBdirty", "fof-256MiB-1MiBdirty"), "ratio-fof-64MiB/1MiB-dirty")
	b.ReportMetric(ratio("first-4GiB-standby", "first-256MiB-standby"), "ratio-first-standby-4GiB/256MiB")
	b.ReportMetric(ratio("fof-4GiB-standby", "fof-256MiB-standby"), "ratio-fof-standby-4GiB/256MiB")
}

// BenchmarkPauseResume: in-memory suspend and resume of a running guest,
// the monitor's time for each.
func BenchmarkPauseResume(b *testing.B) {
	m := newRing3Cfg(b, Config{CPUs: 1, MemMiB: 256}, redirty(256))
	p := watch(b, m)
	if err := m.Start(); err != nil {
		b.Fatal(err)
	}
	defer stopAndClose(b, m)
	p.wait(b, m, 1)
	var pause, resume []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := m.Pause(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := m.Resume(); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		pause, resume = append(pause, t1.Sub(t0)), append(resume, t2.Sub(t1))
		// Back in the guest before the next pause, or Pause would only
		// catch vCPUs that never left the monitor.
		b.StopTimer()
		p.wait(b, m, 1)
		b.StartTimer()
	}
	b.ReportMetric(float64(med(pause).Nanoseconds())/1e3, "µs-pause-p50")
	b.ReportMetric(float64(quantile(pause, 0.99).Nanoseconds())/1e3, "µs-pause-p99")
	b.ReportMetric(float64(med(resume).Nanoseconds())/1e3, "µs-resume-p50")
	b.ReportMetric(float64(quantile(resume, 0.99).Nanoseconds())/1e3, "µs-resume-p99")
}

// procKB reads one "Name: N kB" field of a /proc file.
func procKB(b testing.TB, path, field string) int64 {
	f, err := os.Open(path)
	if err != nil {
		b.Skipf("needs %s: %v", path, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatalf("no %s in %s", field, path)
	return 0
}

// fileKB is the memory the files under dir take (each inode once), plus
// extra, an open file that may have no name there yet.
func fileKB(b testing.TB, dir string, extra *os.File) int64 {
	seen := map[uint64]bool{}
	var kb int64
	add := func(st *syscall.Stat_t) {
		if !seen[st.Ino] {
			seen[st.Ino] = true
			kb += st.Blocks / 2
		}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(extra.Fd()), &st); err != nil {
		b.Fatal(err)
	}
	add(&st)
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && syscall.Lstat(p, &st) == nil {
			add(&st)
		}
		return nil
	})
	return kb
}

// BenchmarkForkPSS: extra memory per idle fork of a parent with 512 MiB of
// guest memory touched. Each iteration forks 1+4 children through snapshot
// directories, runs them and pauses them, and measures the last 4. PSS alone would mislead here: the
// parent's remap unmaps its 512 MiB of shared file pages (they stay in the
// tmpfs file, counted in no process's PSS), so what is measured is what the
// forks add: anonymous pages (private copies, Go heap), page tables, and
// memory-file pages (delta layers).
func BenchmarkForkPSS(b *testing.B) {
	const forks = 4
	var per []float64
	for b.Loop() {
		b.StopTimer()
		shm := shmDir(b)
		parent := newRing3Cfg(b, Config{CPUs: 1, MemMiB: 1024, MemDir: shm}, dirtyPages(512<<20/4096))
		rep := attachAt(b, parent, benchMMIO)
		if err := parent.Start(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-rep.done:
		case <-parent.Done():
			b.Fatalf("parent stopped: %+v", parent.Wait())
		}
		if err := parent.Pause(); err != nil {
			b.Fatal(err)
		}
		measure := func() int64 {
			return procKB(b, "/proc/self/smaps_rollup", "Anonymous") + procKB(b, "/proc/self/status", "VmPTE") + fileKB(b, shm, parent.RAM().File())
		}
		if touched := fileKB(b, shm, parent.RAM().File()); touched < 512<<10 {
			b.Fatalf("parent touched %d KiB, want 512 MiB", touched)
		}
		// The baseline is taken after a first fork, so the parent's own
		// change (its shared mapping and page tables dropped by the remap
		// to private) is not counted against the forks.
		var before int64
		var kids []*Machine
		for i := range forks + 1 {
			if i == 1 {
				before = measure()
			}
			dir := fmt.Sprintf("%s/fork%d", shm, i)
			if _, err := SaveFork(parent, dir); err != nil {
				b.Fatal(err)
			}
			c, err := RestoreDir(Config{MemDir: shm}, dir)
			if err != nil {
				b.Fatal(err)
			}
			attachAt(b, c, benchMMIO)
			os.RemoveAll(dir)
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			kids = append(kids, c)
		}
		for _, c := range kids {
			if err := c.Pause(); err != nil {
				b.Fatal(err)
			}
		}
		per = append(per, float64(measure()-before)/forks)
		for _, c := range kids {
			stopAndClose(b, c)
		}
		parent.Resume()
		stopAndClose(b, parent)
		b.StartTimer()
	}
	var sum float64
	for _, p := range per {
		sum += p
	}
	b.ReportMetric(sum/float64(len(per)), "KiB/fork")
	b.Logf("extra memory per idle fork of a 1 GiB guest with 512 MiB touched (anon + page tables + layer files): %.0f KiB (per iteration %v); KVM's own per-VM memory (shadow-MMU rmaps, ~2 MiB per GiB of slot) is kernel memory, not counted", sum/float64(len(per)), per)
}

// BenchmarkMemorySlot: where a child VM's creation time goes, for the slot
// sizes of a 256 MiB and a 4 GiB guest: KVM_CREATE_VM, and registering the
// RAM's memory slots (KVM_SET_USER_MEMORY_REGION), with the RAM mapped
// private over a file as a restored child's is.
func BenchmarkMemorySlot(b *testing.B) {
	sys, err := kvm.Open()
	if err != nil {
		b.Skipf("needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	shm := shmDir(b)
	sizes := []uint64{256 << 20, 4 << 30}
	rams := map[uint64]*memory.RAM{}
	for _, size := range sizes {
		r, err := memory.New(size, memory.Options{Dir: shm})
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.Freeze(""); err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		rams[size] = r
	}
	create, slot := map[uint64][]time.Duration{}, map[uint64][]time.Duration{}
	for b.Loop() {
		for _, size := range sizes {
			t0 := time.Now()
			vm, err := sys.CreateVM()
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			for i, r := range rams[size].Regions() {
				if err := vm.SetUserMemoryRegion(uint32(i), 0, r.GPA, rams[size].Host(r)); err != nil {
					b.Fatal(err)
				}
			}
			t2 := time.Now()
			vm.Close()
			create[size], slot[size] = append(create[size], t1.Sub(t0)), append(slot[size], t2.Sub(t1))
		}
	}
	for _, size := range sizes {
		b.Logf("%4d MiB: KVM_CREATE_VM p50 %v p99 %v; memory slots p50 %v p99 %v", size>>20,
			med(create[size]), quantile(create[size], 0.99), med(slot[size]), quantile(slot[size], 0.99))
		b.ReportMetric(float64(med(slot[size]).Microseconds()), fmt.Sprintf("µs-slot-%dMiB", size>>20))
	}
}
