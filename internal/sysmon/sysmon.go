// Package sysmon calms the Go runtime's system monitor thread in a process
// whose threads live in system calls, as a monitor's do.
//
// The runtime's sysmon thread sleeps 20 µs at a time while it keeps
// retaking processors (Ps) from threads in system calls, and it does so
// for as long as threads keep entering and leaving short syscalls: a vCPU
// thread going in and out of KVM_RUN, a device worker in and out of
// epoll_wait. It then wakes thousands of times a second (measured in the
// nested harness during a guest's TCP send: 3,000 to 5,500 wakes and a
// fifth of a CPU, beside about 1,300 ms for both vCPU threads), and every
// wake is a timer interrupt that may land on a CPU running a guest. There
// is no knob for it (golang/go#18236). Its sleeps are nanosleep(2), which
// honour the thread's timer slack, so a slack of about a millisecond makes
// those wakes coalesce while the runtime's behaviour stays the same:
// sysmon's duties (retaking Ps, preempting goroutines that run over 10 ms,
// polling the network when nobody does) only come later by up to the slack.
// Threads sysmon starts (it may start an M to run a P it retook) inherit the
// slack, so a Go timer that such a thread waits for may fire up to the slack
// late; a monitor's timers are connection timeouts of seconds.
//
// The thread keeps its name: a new name would be inherited the same way
// and mislabel those threads in per-thread reports.
package sysmon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSlack is the timer slack Relax gives sysmon when asked for 0.
const DefaultSlack = time.Millisecond

// nanosleep is SYS_nanosleep on amd64, the syscall the runtime's usleep
// makes and the one sysmon's thread is nearly always in; nanosleepNr is
// how /proc/TID/syscall spells it.
const nanosleep = unix.SYS_NANOSLEEP

var nanosleepNr = strconv.Itoa(nanosleep)

// Relax finds the sysmon thread of this process and sets its timer slack
// to slack (DefaultSlack if 0). It returns the thread's ID.
//
// sysmon is found as the one thread that sits in nanosleep (Relax's own
// goroutine never does). It sleeps there while any goroutine runs (when none does it
// waits on a futex instead), so Relax keeps its own goroutine running
// between looks, 200 µs apart, and changes nothing unless exactly one
// such thread is seen twice in a row; that takes well under a
// millisecond. Setting another thread's slack needs CAP_SYS_NICE; without
// it Relax fails and the process runs as before.
func Relax(slack time.Duration) (int, error) {
	if slack <= 0 {
		slack = DefaultSlack
	}
	prev := 0
	for range 50 {
		tid, err := sleeper()
		if err != nil {
			return 0, err
		}
		if tid != 0 && tid == prev {
			return tid, set(tid, slack)
		}
		prev = tid
		// Busy, not asleep: with every P idle sysmon leaves nanosleep.
		for t := time.Now(); time.Since(t) < 200*time.Microsecond; {
			runtime.Gosched()
		}
	}
	return 0, errors.New("sysmon: no single thread seen sleeping in nanosleep")
}

// sleeper returns the one thread of this process that is in nanosleep, 0
// if none or several are.
func sleeper() (int, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, fmt.Errorf("sysmon: %w", err)
	}
	found := 0
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc/self/task", t.Name(), "syscall"))
		if err != nil {
			continue // the thread exited, or the kernel hides it
		}
		f := strings.Fields(string(b))
		if len(f) == 0 || f[0] != nanosleepNr {
			continue
		}
		if found != 0 {
			return 0, nil
		}
		found = tid
	}
	return found, nil
}

// set gives thread tid the timer slack.
func set(tid int, slack time.Duration) error {
	path := fmt.Sprintf("/proc/%d/timerslack_ns", tid)
	if err := os.WriteFile(path, []byte(strconv.FormatInt(slack.Nanoseconds(), 10)), 0); err != nil {
		return fmt.Errorf("sysmon: set timer slack of thread %d: %w", tid, err)
	}
	return nil
}
