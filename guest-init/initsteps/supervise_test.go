package initsteps

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBackoff(t *testing.T) {
	b := backoff{Min: 100 * time.Millisecond, Max: time.Second, Stable: 30 * time.Second}
	ms := time.Millisecond
	runs := []struct {
		ran  time.Duration
		want time.Duration
	}{
		{10 * ms, 100 * ms}, // first crash: Min
		{10 * ms, 200 * ms}, // dying young: doubling
		{10 * ms, 400 * ms},
		{10 * ms, 800 * ms},
		{10 * ms, time.Second}, // capped
		{10 * ms, time.Second},
		{time.Minute, 100 * ms}, // a long run resets
		{10 * ms, 200 * ms},
	}
	for i, r := range runs {
		if got := b.next(r.ran); got != r.want {
			t.Errorf("run %d (ran %v): delay %v, want %v", i, r.ran, got, r.want)
		}
	}
}

// readyAgent returns a supervisor whose fake agent is ready at once.
func readyAgent(t *testing.T) (*Supervisor, *[]uint32) {
	t.Helper()
	s := newSupervisor(t.Logf)
	var ports []uint32
	s.start = func(port uint32) (int, *os.File, error) {
		ports = append(ports, port)
		r, w, err := os.Pipe()
		if err != nil {
			return 0, nil, err
		}
		w.WriteString(agentReadyLine + "\n")
		w.Close()
		return 100 + len(ports), r, nil
	}
	return s, &ports
}

func TestSupervisorRestarts(t *testing.T) {
	s := newSupervisor(t.Logf)
	pid := 0
	s.start = func(uint32) (int, *os.File, error) { pid++; return 100 + pid, nil, nil }
	var delays []time.Duration
	s.after = func(d time.Duration, f func()) { delays = append(delays, d); f() }

	if err := s.Start(1024); err != nil {
		t.Fatal(err)
	}
	exited := syscall.WaitStatus(1 << 8) // exit status 1
	if s.Exited(999, exited) {
		t.Error("an orphan's exit was taken for the agent's")
	}
	for want := 101; want <= 103; want++ {
		if !s.Exited(want, exited) {
			t.Fatalf("pid %d: not recognised as the agent", want)
		}
	}
	if diff := cmp.Diff([]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}, delays); diff != "" {
		t.Errorf("restart delays (-want +got):\n%s", diff)
	}
	if got := s.Stop(); got != 104 {
		t.Errorf("Stop() = %d, want the running agent 104", got)
	}
	if !s.Exited(104, exited) || len(delays) != 3 {
		t.Errorf("restarted after Stop: delays %v", delays)
	}
	if err := s.Start(1024); err == nil {
		t.Error("Start after Stop succeeded")
	}
}

func TestSupervisorReady(t *testing.T) {
	s, ports := readyAgent(t)
	if err := s.Start(2048); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitReady(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{2048}, *ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	ran := false
	if !s.WhenReady(func() { ran = true }) || !ran {
		t.Error("WhenReady after readiness did not run at once")
	}
}

func TestSupervisorNotReady(t *testing.T) {
	s := newSupervisor(t.Logf)
	s.start = func(uint32) (int, *os.File, error) { return 7, nil, nil }
	if err := s.Start(1); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitReady(time.Millisecond); err == nil {
		t.Error("WaitReady succeeded for an agent that never said ready")
	}
}

func TestSupervisorStartFails(t *testing.T) {
	s := newSupervisor(t.Logf)
	s.start = func(uint32) (int, *os.File, error) { return 0, nil, errInjected }
	if err := s.Start(1); !errors.Is(err, errInjected) {
		t.Errorf("Start: %v", err)
	}
	if s.Exited(0, 0) {
		t.Error("pid 0 taken for the agent")
	}
}

// TestAgentProcess starts a real child through the supervisor's launcher:
// this test binary, in a mode that writes the readiness line on the fd it is
// given and exits. Held, it writes "held" first and "ready" only once the
// gate is released.
func TestAgentProcess(t *testing.T) {
	if os.Getenv("BOXD_INITSTEPS_FAKE_AGENT") == "1" {
		return // in the child: TestMain did the work
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("BOXD_INITSTEPS_FAKE_AGENT", "1")
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("held=%v", held), func(t *testing.T) {
			s := newSupervisor(t.Logf)
			if held {
				if err := s.Hold(); err != nil {
					t.Fatal(err)
				}
			}
			pid, r, err := startAgentProcess(self, append(os.Environ(), "BOXD_INITSTEPS_FAKE_AGENT=1"), 1234, s.gateR)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			lines := bufio.NewScanner(r)
			var got []string
			if held {
				// The child is blocked on the gate after "held": nothing
				// more can come until Release.
				if !lines.Scan() {
					t.Fatalf("no line from the held child: %v", lines.Err())
				}
				got = append(got, lines.Text())
				s.Release()
			}
			for lines.Scan() {
				got = append(got, lines.Text())
			}
			want := []string{agentReadyLine}
			if held {
				want = []string{"held", agentReadyLine}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
			var ws syscall.WaitStatus
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
				t.Errorf("child: %v, status %v", err, ws)
			}
		})
	}
}

func TestMain(m *testing.M) {
	// The fake agent: argv is [self agent --port=N --ready-fd=3 [--gate-fd=4]].
	if os.Getenv("BOXD_INITSTEPS_FAKE_AGENT") == "1" && len(os.Args) >= 4 && os.Args[1] == "agent" {
		if os.Args[2] != "--port=1234" || os.Args[3] != "--ready-fd=3" {
			os.Exit(2)
		}
		f := os.NewFile(3, "ready")
		if len(os.Args) == 5 {
			if os.Args[4] != "--gate-fd=4" {
				os.Exit(2)
			}
			if _, err := f.WriteString("held\n"); err != nil {
				os.Exit(3)
			}
			io.Copy(io.Discard, os.NewFile(4, "gate"))
		}
		if _, err := f.WriteString(agentReadyLine + "\n"); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
