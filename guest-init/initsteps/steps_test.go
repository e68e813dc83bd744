package initsteps

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestRunFatalAndNonFatal(t *testing.T) {
	var ran []string
	step := func(name string, err error, fatal bool) Step {
		return Step{Name: name, Fatal: fatal, Run: func(*Env) error { ran = append(ran, name); return err }}
	}
	tests := []struct {
		name    string
		steps   []Step
		wantRan []string
		wantErr error
		wantLog []string // prefixes of the log lines, in order
	}{
		{
			name:    "all ok",
			steps:   []Step{step("a", nil, true), step("b", nil, false)},
			wantRan: []string{"a", "b"},
			wantLog: []string{"a: ok", "b: ok"},
		},
		{
			name:    "non-fatal failure continues",
			steps:   []Step{step("a", errInjected, false), step("b", nil, true)},
			wantRan: []string{"a", "b"},
			wantLog: []string{"a: failed, continuing: injected", "b: ok"},
		},
		{
			name:    "fatal failure stops",
			steps:   []Step{step("a", errInjected, true), step("b", nil, true)},
			wantRan: []string{"a"},
			wantErr: errInjected,
			wantLog: []string{"a: FAILED (fatal): injected"},
		},
		{
			name:    "escalated failure stops",
			steps:   []Step{step("a", errors.Join(ErrFatal, errInjected), false), step("b", nil, true)},
			wantRan: []string{"a"},
			wantErr: ErrFatal,
			wantLog: []string{"a: FAILED (fatal)"},
		},
		{
			name:    "skip is not a failure even when fatal",
			steps:   []Step{step("a", Skip("nothing to do"), true), step("b", nil, false)},
			wantRan: []string{"a", "b"},
			wantLog: []string{"a: skipped: nothing to do", "b: ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran = nil
			env, _, log := testEnv(t, "")
			err := Run(tt.steps, env)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Run: %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantRan, ran); diff != "" {
				t.Errorf("steps run (-want +got):\n%s", diff)
			}
			if len(*log) != len(tt.wantLog) {
				t.Fatalf("log %q, want %d lines", *log, len(tt.wantLog))
			}
			for i, want := range tt.wantLog {
				if !strings.HasPrefix((*log)[i], want) {
					t.Errorf("log line %d = %q, want prefix %q", i, (*log)[i], want)
				}
			}
		})
	}
}

func names(steps []Step) []string {
	var out []string
	for _, s := range steps {
		if s.Concurrent != nil {
			out = append(out, s.Name+" ["+strings.Join(names(s.Concurrent), ", ")+"]")
			continue
		}
		out = append(out, s.Name)
	}
	return out
}

func TestStepLists(t *testing.T) {
	wantEarly := []string{
		"mount /proc", "mount /sys", "mount /dev", "boot-timer mark 1", "cmdline", "mount /dev/pts",
		"mount /dev/shm", "mount /run", "mount /tmp", "mount /sys/fs/cgroup", "entropy", "clock", "switch root",
	}
	if diff := cmp.Diff(wantEarly, names(Early())); diff != "" {
		t.Errorf("Early (-want +got):\n%s", diff)
	}
	wantLate := []string{"cmdline", "setup [agent start, loopback, network, guest tools]", "agent", "boot-timer mark 2"}
	if diff := cmp.Diff(wantLate, names(Late())); diff != "" {
		t.Errorf("Late (-want +got):\n%s", diff)
	}
	// What must hold for the guest to be usable at all is fatal; the rest
	// degrades.
	fatal := map[string]bool{}
	var all []Step
	for _, s := range append(Early(), Late()...) {
		all = append(append(all, s), s.Concurrent...)
	}
	for _, s := range all {
		if s.Fatal {
			fatal[s.Name] = true
		}
	}
	want := map[string]bool{"mount /proc": true, "mount /sys": true, "mount /dev": true, "mount /run": true}
	if diff := cmp.Diff(want, fatal); diff != "" {
		t.Errorf("fatal steps (-want +got):\n%s", diff)
	}
}

// TestEarlyOnInitramfs runs the early steps with no root disk: everything is
// mounted, the command line applied, and init stays where it is.
func TestEarlyOnInitramfs(t *testing.T) {
	env, sys, log := testEnv(t, "console=ttyS0 boxd.seed=0a0b boxd.time=1700000000000000000 boxd.colour=red")
	if err := Run(Early(), env); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`mount proc /proc proc ""`,
		`mount sysfs /sys sysfs ""`,
		`mount devtmpfs /dev devtmpfs "mode=0755"`,
		"mmio 0xc0000000=1",
		`mount devpts /dev/pts devpts "gid=5,mode=0620,ptmxmode=0666"`,
		`mount shm /dev/shm tmpfs "mode=1777"`,
		`mount tmpfs /run tmpfs "mode=0755"`,
		`mount tmpfs /tmp tmpfs "mode=1777"`,
		`mount cgroup2 /sys/fs/cgroup cgroup2 "nsdelegate"`,
		"entropy 0a0b",
		"clock 1700000000000000000",
	}
	if diff := cmp.Diff(want, sys.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	for _, d := range []string{"proc", "sys", "dev/pts", "run", "sys/fs/cgroup"} {
		if fi, err := os.Stat(env.Path(d)); err != nil || !fi.IsDir() {
			t.Errorf("mount point %s not created: %v", d, err)
		}
	}
	all := strings.Join(*log, "\n")
	for _, want := range []string{"cmdline: ignored boxd.colour: unknown key", "switch root: skipped: no boxd.root"} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %q:\n%s", want, all)
		}
	}
}

func TestEarlyFatalMountStops(t *testing.T) {
	env, sys, _ := testEnv(t, "")
	sys.fail["mount sysfs"] = errInjected
	sys.fail["mount cgroup2"] = errInjected // would be non-fatal, never reached
	err := Run(Early(), env)
	if !errors.Is(err, errInjected) || !strings.HasPrefix(err.Error(), "mount /sys:") {
		t.Fatalf("Run: %v, want the /sys failure", err)
	}
	if got := sys.Calls(); len(got) != 2 {
		t.Errorf("calls %q, want proc and sys only", got)
	}
}

func TestEarlyNonFatalMountContinues(t *testing.T) {
	env, sys, _ := testEnv(t, "boxd.time=5")
	sys.fail["mount cgroup2"] = errInjected
	sys.fail["mmio"] = errInjected // no /dev/mem: boot goes on without marks
	if err := Run(Early(), env); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := sys.Calls(); got[len(got)-1] != "clock 5" {
		t.Errorf("calls %q, want boot to carry on after the cgroup2 failure", got)
	}
}

// TestEarlySwitchesRoot checks the whole early list with a root disk: the
// switch re-executes init from the new root's /run with --switched.
func TestEarlySwitchesRoot(t *testing.T) {
	env, sys, _ := testEnv(t, "boxd.root=/dev/vda")
	err := Run(Early(), env)
	// The fake exec returns, which the switch reports as fatal: in a guest
	// exec does not return.
	if !errors.Is(err, ErrFatal) {
		t.Fatalf("Run: %v, want the fatal plan-ended error", err)
	}
	calls := sys.Calls()
	tail := calls[len(calls)-13:]
	want := []string{
		`mount /dev/vda /newroot ext4 ""`,
		"move /dev /newroot/dev", "move /proc /newroot/proc", "move /sys /newroot/sys",
		"move /run /newroot/run", "move /tmp /newroot/tmp",
		`mount /bin /newroot/run/boxd/bin  ""`, `mount  /newroot/run/boxd/bin  ""`,
		"chdir /newroot", "move . /", "chroot .", "chdir /",
		"exec /run/boxd/bin/init --switched",
	}
	if diff := cmp.Diff(want, tail); diff != "" {
		t.Errorf("switch calls (-want +got):\n%s", diff)
	}
	for _, f := range []string{"init", "boxd", "busybox"} {
		if _, err := os.Stat(filepath.Join(env.Root, "bin", f)); err != nil {
			t.Errorf("bin/%s deleted with the initramfs: %v", f, err)
		}
	}
}

func TestEarlyBadRootStaysOnInitramfs(t *testing.T) {
	env, sys, log := testEnv(t, "boxd.root=/dev/vdb")
	if err := Run(Early(), env); err != nil {
		t.Fatalf("Run: %v; a missing disk must not stop the boot", err)
	}
	for _, c := range sys.Calls() {
		if strings.HasPrefix(c, "exec") || strings.HasPrefix(c, "mount /dev/vdb") {
			t.Errorf("unexpected %q", c)
		}
	}
	if !strings.Contains(strings.Join(*log, "\n"), "switch root: failed, continuing: root not switched") {
		t.Errorf("log:\n%s", strings.Join(*log, "\n"))
	}
}

func TestLate(t *testing.T) {
	tests := []struct {
		name     string
		cmdline  string
		noEth0   bool
		switched bool
		want     []string
	}{
		{
			name:    "full network",
			cmdline: "boxd.ip=10.0.0.2/24 boxd.gw=10.0.0.1 boxd.dns=10.0.0.1,1.1.1.1 boxd.hostname=vm1",
			want:    []string{"link-up lo", "network if=eth0 addr=10.0.0.2/24 gw=10.0.0.1 dns=10.0.0.1,1.1.1.1 host=vm1", "mmio 0xc0000000=2"},
		},
		{
			name:    "no eth0 keeps dns and hostname",
			cmdline: "boxd.ip=10.0.0.2/24 boxd.dns=10.0.0.1 boxd.hostname=vm1",
			noEth0:  true,
			want:    []string{"link-up lo", "network if=eth0 addr= gw= dns=10.0.0.1 host=vm1", "mmio 0xc0000000=2"},
		},
		{
			name: "nothing to configure",
			want: []string{"link-up lo", "mmio 0xc0000000=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, sys, _ := testEnv(t, tt.cmdline)
			if tt.noEth0 {
				delete(sys.links, "eth0")
			}
			env.Agent, _ = readyAgent(t)
			if err := Run(Late(), env); err != nil {
				t.Fatal(err)
			}
			// Network, loopback and tools run concurrently; mark 2 comes last.
			got := sys.Calls()
			if diff := cmp.Diff(tt.want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if got[len(got)-1] != "mmio 0xc0000000=2" {
				t.Errorf("calls %q: mark 2 is not last", got)
			}
		})
	}
}

func TestLateMarkWaitsForAgent(t *testing.T) {
	env, sys, log := testEnv(t, "")
	s := newSupervisor(env.Logf)
	s.start = func(uint32) (int, *os.File, error) { return 42, nil, nil } // never ready
	env.Agent, env.AgentReadyTimeout = s, 10*time.Millisecond
	if err := Run(Late(), env); err != nil {
		t.Fatal(err)
	}
	if got := sys.Calls(); len(got) != 1 {
		t.Errorf("calls %q, want no mark before the agent is ready", got)
	}
	if !strings.Contains(strings.Join(*log, "\n"), "boot-timer mark 2: skipped: deferred") {
		t.Errorf("log:\n%s", strings.Join(*log, "\n"))
	}
	s.markReady()
	if got := sys.Calls(); got[len(got)-1] != "mmio 0xc0000000=2" {
		t.Errorf("calls %q, want mark 2 once the agent is ready", got)
	}
}

func TestGuestTools(t *testing.T) {
	env, _, _ := testEnv(t, "")
	env.Switched = true
	bin := env.Path("/run/boxd/bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"boxd", "busybox"} {
		if err := os.WriteFile(filepath.Join(bin, f), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A user's own reboot is left alone.
	if err := os.MkdirAll(env.Path("/usr/local/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env.Path("/usr/local/sbin/reboot"), []byte("mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent: every boot runs it
		if err := guestTools(env); err != nil {
			t.Fatal(err)
		}
	}
	for link, want := range map[string]string{
		"/usr/local/bin/boxd":      "/run/boxd/bin/boxd",
		"/usr/local/sbin/poweroff": "/run/boxd/bin/busybox",
		"/usr/local/sbin/halt":     "/run/boxd/bin/busybox",
	} {
		if got, err := os.Readlink(env.Path(link)); err != nil || got != want {
			t.Errorf("%s -> %q, %v; want %q", link, got, err, want)
		}
	}
	if b, _ := os.ReadFile(env.Path("/usr/local/sbin/reboot")); string(b) != "mine" {
		t.Errorf("user's reboot replaced")
	}
}

// TestQuiet checks that the kernel's "quiet" leaves only failures on the
// console: each byte written there costs a VM exit.
func TestQuiet(t *testing.T) {
	env, sys, log := testEnv(t, "quiet boxd.root=/dev/vda boxd.colour=red")
	sys.fail["mount cgroup2"] = errInjected
	err := Run(Early(), env)
	if !errors.Is(err, ErrFatal) { // the fake exec returns
		t.Fatalf("Run: %v", err)
	}
	var got []string
	for _, l := range *log {
		got = append(got, strings.SplitN(l, ":", 2)[0])
	}
	// Lines before the command line was read, then only what went wrong.
	want := []string{"mount /proc", "mount /sys", "mount /dev", "boot-timer mark 1",
		"cmdline", "mount /sys/fs/cgroup", "switch root"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log (-want +got):\n%s\nfull log:\n%s", diff, strings.Join(*log, "\n"))
	}
}
