package sysmon

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needNice skips where another thread's timer slack cannot be set.
func needNice(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("setting another thread's timer slack needs CAP_SYS_NICE: run as root")
	}
}

func readTask(tb testing.TB, tid int, file string) string {
	tb.Helper()
	path := fmt.Sprintf("/proc/self/task/%d/%s", tid, file)
	if file == "timerslack_ns" { // only in the top-level /proc/TID
		path = fmt.Sprintf("/proc/%d/%s", tid, file)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestRelaxFindsAndSetsSysmon(t *testing.T) {
	needNice(t)
	self := unix.Gettid()
	before := map[int]string{}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, e := range tasks {
		tid, _ := strconv.Atoi(e.Name())
		before[tid] = readTask(t, tid, "timerslack_ns")
	}

	tid, err := Relax(3 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if tid == self {
		t.Fatalf("Relax picked the calling thread %d", tid)
	}
	if _, ok := before[tid]; !ok {
		t.Fatalf("Relax picked thread %d, not one of this process's threads at the start: %v", tid, before)
	}
	if got := readTask(t, tid, "timerslack_ns"); got != "3000000" {
		t.Errorf("timer slack of %d = %s, want 3000000", tid, got)
	}
	// The thread is the runtime's sleeper: it is found in nanosleep again,
	// and no other thread's slack changed.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(readTask(t, tid, "syscall"), strconv.Itoa(nanosleep)+" ") {
		if time.Now().After(deadline) {
			t.Fatalf("thread %d never seen in nanosleep again: %s", tid, readTask(t, tid, "syscall"))
		}
		time.Sleep(time.Millisecond)
	}
	for other, slack := range before {
		if other == tid {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", other)); err == nil && strings.TrimSpace(string(b)) != slack {
			t.Errorf("thread %d's timer slack changed from %s to %s", other, slack, b)
		}
	}
}

// TestRelaxDefaultSlack also starts from an idle process: with every P
// idle, sysmon waits on a futex, not in nanosleep, until Relax runs.
func TestRelaxDefaultSlack(t *testing.T) {
	needNice(t)
	time.Sleep(200 * time.Millisecond)
	tid, err := Relax(0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readTask(t, tid, "timerslack_ns"), strconv.FormatInt(DefaultSlack.Nanoseconds(), 10); got != want {
		t.Errorf("timer slack = %s, want %s", got, want)
	}
}

// syscallLoad keeps n goroutines on their own threads going in and out of
// short blocking syscalls (reads of eventfds another goroutine writes
// every 200 µs), the pattern of a monitor's vCPU and device threads, until stop
// is called.
func syscallLoad(tb testing.TB, n int) (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			tb.Fatal(err)
		}
		fds[i] = fd
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var b [8]byte
			for !done.Load() {
				_, _ = unix.Read(fd, b[:])
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		for !done.Load() {
			for _, fd := range fds {
				_, _ = unix.Write(fd, one)
			}
			time.Sleep(200 * time.Microsecond) // a Go timer: no nanosleep to confuse Relax
		}
		for _, fd := range fds { // wake the readers so they see done
			_, _ = unix.Write(fd, one)
		}
	}()
	return func() {
		done.Store(true)
		wg.Wait()
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// switches returns thread tid's context switches so far.
func switches(tb testing.TB, tid int) int64 {
	var n int64
	for _, l := range strings.Split(readTask(tb, tid, "status"), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.HasSuffix(k, "voluntary_ctxt_switches") {
			c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			n += c
		}
	}
	return n
}

// BenchmarkSysmonWakes prints how often sysmon wakes while three threads
// go in and out of short syscalls, first as the runtime leaves it, then
// after Relax, side by side in one process. Run with -benchtime 1x.
func BenchmarkSysmonWakes(b *testing.B) {
	needNice(b)
	stop := syscallLoad(b, 3)
	defer stop()
	tid := 0
	for tid == 0 {
		var err error
		if tid, err = sleeper(); err != nil {
			b.Fatal(err)
		}
	}
	const window = 2 * time.Second
	measure := func() float64 {
		s0 := switches(b, tid)
		time.Sleep(window)
		return float64(switches(b, tid)-s0) / window.Seconds()
	}
	for range b.N {
		base := measure()
		if _, err := Relax(0); err != nil {
			b.Fatal(err)
		}
		relaxed := measure()
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/timerslack_ns", tid), []byte("50000"), 0)
		b.ReportMetric(base, "wakes/s-default")
		b.ReportMetric(relaxed, "wakes/s-relaxed")
		b.Logf("sysmon wakes/s under 3 syscall-bound threads: default slack %.0f, relaxed (%v) %.0f, ratio %.2f",
			base, DefaultSlack, relaxed, relaxed/base)
	}
}
