// Package scripts holds tests of the repository's shell scripts.
package scripts

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBoxd is a stand-in for "boxd nested": invocation N prints
// $FAKE/outN, records its arguments in $FAKE/argvN and exits with the code
// in $FAKE/rcN.
const fakeBoxd = `#!/bin/bash
n=$(( $(cat "$FAKE/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$FAKE/count"
printf '%s\n' "$@" > "$FAKE/argv$n"
cat "$FAKE/out$n"
exit "$(cat "$FAKE/rc$n")"
`

type fakeRun struct {
	out string
	rc  int
}

const (
	l1Died   = "nested: L1 stopped before the command finished\n"
	l1Hung   = "boxd: nested: L1 stopped before the command finished: it hung (no heartbeat for 2m0s) and was stopped (qemu: signal: killed)\n"
	livelock = "    diagnosis: tid 186 livelocked in L1's KVM: 6642 nested page faults\n"
)

// runE2E runs scripts/e2e.sh with fake runs and returns its exit code, the
// arguments each invocation got after the test binary, and the reruns file.
func runE2E(t *testing.T, runs []fakeRun) (int, [][]string, string) {
	t.Helper()
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake")
	out := filepath.Join(dir, "out")
	for _, d := range []string{fake, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	boxd := filepath.Join(dir, "boxd")
	if err := os.WriteFile(boxd, []byte(fakeBoxd), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, r := range runs {
		os.WriteFile(filepath.Join(fake, fmt.Sprintf("out%d", i+1)), []byte(r.out), 0o644)
		os.WriteFile(filepath.Join(fake, fmt.Sprintf("rc%d", i+1)), []byte(fmt.Sprint(r.rc)), 0o644)
	}
	cmd := exec.Command("bash", "e2e.sh", boxd, out, "/e2e.test", "-test.count=1")
	cmd.Env = append(os.Environ(), "FAKE="+fake)
	b, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("e2e.sh: %v\n%s", err, b)
	}
	var argvs [][]string
	for i := 1; ; i++ {
		a, err := os.ReadFile(filepath.Join(fake, fmt.Sprintf("argv%d", i)))
		if err != nil {
			break
		}
		args := strings.Split(strings.TrimSuffix(string(a), "\n"), "\n")
		for j, s := range args {
			if s == "/e2e.test" {
				args = args[j+1:]
				break
			}
		}
		argvs = append(argvs, args)
	}
	reruns, _ := os.ReadFile(filepath.Join(out, "e2e-reruns.txt"))
	return code, argvs, string(reruns)
}

func pass(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "=== RUN   %s\n--- PASS: %s (1.00s)\n", n, n)
	}
	return b.String()
}

func fail(name, why string) string {
	return fmt.Sprintf("=== RUN   %s\n    x_test.go:1: %s--- FAIL: %s (1.00s)\n", name, why, name)
}

// scripts/e2e.sh reruns tests only after a nested-harness fault (L1 died
// or hung, a guest livelocked or triple-faulted), at most twice, and never
// hides any other failure.
func TestE2ESh(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash")
	}
	const args = "-test.v -test.count=1"
	for _, tc := range []struct {
		name     string
		runs     []fakeRun
		wantCode int
		wantArgs []string // per invocation, joined
		reruns   int      // lines in e2e-reruns.txt
		announce string   // a text the announcements must contain
	}{
		{
			name:     "passes",
			runs:     []fakeRun{{pass("TestA", "TestB") + "PASS\n", 0}},
			wantArgs: []string{args},
		},
		{
			name:     "real failure is not rerun",
			runs:     []fakeRun{{pass("TestA") + fail("TestB", "wrong answer\n") + "FAIL\n", 1}},
			wantCode: 1,
			wantArgs: []string{args},
		},
		{
			name:     "a flake beside a real failure is not rerun",
			runs:     []fakeRun{{fail("TestA", livelock) + fail("TestB", "wrong answer\n") + "FAIL\n", 1}},
			wantCode: 1,
			wantArgs: []string{args},
		},
		{
			name:     "livelock rerun passes",
			runs:     []fakeRun{{pass("TestA") + fail("TestB", livelock) + "FAIL\n", 1}, {pass("TestB"), 0}},
			wantArgs: []string{args, args + ` -test.run ^(TestB)$`},
			reruns:   1,
		},
		{
			name:     "L1 died, the rest pass",
			runs:     []fakeRun{{pass("TestA", "TestB") + l1Died, 1}, {pass("TestC"), 0}},
			wantArgs: []string{args, args + ` -test.skip ^(TestA|TestB)$`},
			reruns:   1,
		},
		{
			name:     "L1's heartbeat stopped",
			runs:     []fakeRun{{pass("TestA") + l1Hung, 125}, {pass("TestB"), 0}},
			wantArgs: []string{args, args + ` -test.skip ^(TestA)$`},
			reruns:   1,
			announce: "L1 hung (its heartbeat stopped)",
		},
		{
			name:     "L1 hung before any test passed",
			runs:     []fakeRun{{"=== RUN   TestA\n", 124}, {pass("TestA"), 0}},
			wantArgs: []string{args, args + ` -test.skip ^$`},
			reruns:   1,
		},
		{
			name: "L1 died, then a livelock, then it passes",
			runs: []fakeRun{
				{pass("TestA") + l1Died, 1},
				{pass("TestB") + fail("TestC", livelock) + "FAIL\n", 1},
				{pass("TestC"), 0},
			},
			wantArgs: []string{args, args + ` -test.skip ^(TestA)$`, args + ` -test.run ^(TestC)$`},
			reruns:   2,
		},
		{
			name: "a livelock, then L1 died: tests passed in either run are skipped",
			runs: []fakeRun{
				{pass("TestA") + fail("TestB", livelock) + fail("TestC", livelock) + "FAIL\n", 1},
				{pass("TestB") + l1Died, 1},
				{pass("TestC"), 0},
			},
			wantArgs: []string{args, args + ` -test.run ^(TestB|TestC)$`, args + ` -test.skip ^(TestA|TestB)$`},
			reruns:   2,
		},
		{
			name: "three faults in a row fail",
			runs: []fakeRun{
				{fail("TestA", livelock) + "FAIL\n", 1},
				{fail("TestA", livelock) + "FAIL\n", 1},
				{fail("TestA", livelock) + "FAIL\n", 1},
			},
			wantCode: 1,
			wantArgs: []string{args, args + ` -test.run ^(TestA)$`, args + ` -test.run ^(TestA)$`},
			reruns:   2,
		},
		{
			name:     "a real failure on the rerun fails",
			runs:     []fakeRun{{fail("TestA", livelock) + "FAIL\n", 1}, {fail("TestA", "wrong answer\n") + "FAIL\n", 1}},
			wantCode: 1,
			wantArgs: []string{args, args + ` -test.run ^(TestA)$`},
			reruns:   1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, argvs, reruns := runE2E(t, tc.runs)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d", code, tc.wantCode)
			}
			var got []string
			for _, a := range argvs {
				got = append(got, strings.Join(a, " "))
			}
			if strings.Join(got, "\n") != strings.Join(tc.wantArgs, "\n") {
				t.Errorf("invocations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantArgs, "\n"))
			}
			if n := strings.Count(reruns, "\n"); n != tc.reruns {
				t.Errorf("%d reruns announced, want %d:\n%s", n, tc.reruns, reruns)
			}
			if !strings.Contains(reruns, tc.announce) {
				t.Errorf("reruns announced:\n%s\nwant them to say %q", reruns, tc.announce)
			}
		})
	}
}
