package threadname

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func comm(t *testing.T, tid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", tid))
	if err != nil {
		t.Errorf("thread name: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func TestLockNamesAndRestores(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		unlock := Lock("vcpu7-with-a-long-name")
		tid := unix.Gettid() // stays this goroutine's thread until unlock
		if got := comm(t, tid); got != "vcpu7-with-a-lo" {
			t.Errorf("named thread is %q, want the name's first 15 bytes", got)
		}
		unlock()
		if got := comm(t, tid); got == "vcpu7-with-a-lo" {
			t.Errorf("after unlock the thread is still %q", got)
		}
	}()
	<-done
}
