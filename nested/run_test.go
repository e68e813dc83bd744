package nested

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWithDefaults(t *testing.T) {
	if _, err := (Config{}).withDefaults(); err == nil {
		t.Error("a config without a command was accepted")
	}
	out := filepath.Join(t.TempDir(), "new", "out")
	cfg, err := Config{Cmd: []string{"true"}, OutDir: out}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if cfg.Dir != wd || cfg.Timeout != DefaultTimeout || cfg.Mem < 1024 || cfg.Mem > 8192 || cfg.CPUs != DefaultCPUs || cfg.Env == nil {
		t.Errorf("defaults: dir %q timeout %v mem %d cpus %d env set %v", cfg.Dir, cfg.Timeout, cfg.Mem, cfg.CPUs, cfg.Env != nil)
	}
	if st, err := os.Stat(out); err != nil || !st.IsDir() {
		t.Errorf("output directory not created: %v", err)
	}
	for _, w := range []io.Writer{cfg.Stdout, cfg.Stderr, cfg.Log} {
		if _, err := w.Write([]byte("x")); err != nil {
			t.Errorf("default writer: %v", err)
		}
	}
}

// syncBuffer is a strings.Builder safe for the harness's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lineWatcher calls fn once with the first line written to it.
type lineWatcher struct {
	syncBuffer
	once sync.Once
	fn   func(line string)
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	if line, _, ok := strings.Cut(w.String(), "\n"); ok {
		w.once.Do(func() { w.fn(line) })
	}
	return n, err
}

func TestRunDirect(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr syncBuffer
	code, err := run(context.Background(), Config{
		Cmd:    []string{"sh", "-c", `echo "out $BOXD_NESTED_OUT $PWD"; echo err >&2; exit 3`},
		Dir:    "/",
		OutDir: out,
		Stdout: &stdout,
		Stderr: &stderr,
	}, true, "test")
	if err != nil || code != 3 {
		t.Fatalf("run = %d, %v; want 3, nil", code, err)
	}
	if got, want := stdout.String(), "out "+out+" /\n"; got != want {
		t.Errorf("stdout %q; want %q", got, want)
	}
	if got := stderr.String(); got != "err\n" {
		t.Errorf("stderr %q", got)
	}

	code, err = run(context.Background(), Config{Cmd: []string{"sh", "-c", "kill -TERM $$"}}, true, "test")
	if err != nil || code != 128+15 {
		t.Errorf("command killed by SIGTERM: %d, %v; want 143", code, err)
	}
	if _, err := run(context.Background(), Config{Cmd: []string{"/nonexistent/cmd"}}, true, "test"); err == nil {
		t.Error("a missing command did not fail")
	}
}

func TestRunDirectTimeout(t *testing.T) {
	var p proc
	code, err := run(context.Background(), Config{
		Cmd:     []string{"sleep", "1000"},
		Timeout: 100 * time.Millisecond,
		onStart: func(pid int) { p = newProc(t, pid) },
	}, true, "test")
	if !errors.Is(err, ErrTimeout) || code != -1 {
		t.Fatalf("run = %d, %v; want -1 and ErrTimeout", code, err)
	}
	if !p.gone() {
		t.Errorf("command %d still running after the timeout", p.pid)
	}
}

// TestRunDirectCancelKillsGroup cancels once the command has started a
// background child, and checks the child went with it.
func TestRunDirectCancelKillsGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var main proc
	var child proc
	stdout := &lineWatcher{fn: func(line string) {
		pid, err := strconv.Atoi(line)
		if err != nil {
			t.Errorf("first line %q is not a PID", line)
		} else {
			child = newProc(t, pid)
		}
		cancel()
	}}
	_, err := run(ctx, Config{
		Cmd:     []string{"sh", "-c", "sleep 1000 & echo $!; wait"},
		Stdout:  stdout,
		onStart: func(pid int) { main = newProc(t, pid) },
	}, true, "test")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("run err = %v; want context.Canceled", err)
	}
	if !main.gone() {
		t.Errorf("command %d still running after cancel", main.pid)
	}
	if child.pid == 0 || !child.waitGone(10*time.Second) {
		t.Errorf("background child %d still running after cancel", child.pid)
	}
}

func TestRunL1MissingQEMU(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := run(context.Background(), Config{Cmd: []string{"true"}}, false, "")
	var me *MissingError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "qemu-system-x86_64") || !strings.Contains(err.Error(), InstallCommand) {
		t.Errorf("err = %v; want a MissingError naming QEMU and the install command", err)
	}
}

func TestRunDirectUsesEnvPath(t *testing.T) {
	bin := t.TempDir()
	mustWrite(t, filepath.Join(bin, "boxd-test-tool"), "#!/bin/sh\necho tool \"$0\"\n")
	if err := os.Chmod(filepath.Join(bin, "boxd-test-tool"), 0o755); err != nil {
		t.Fatal(err)
	}
	var stdout syncBuffer
	code, err := run(context.Background(), Config{
		Cmd:    []string{"boxd-test-tool"},
		Env:    []string{"PATH=/nonexistent:" + bin},
		Stdout: &stdout,
	}, true, "test")
	if err != nil || code != 0 {
		t.Fatalf("run = %d, %v", code, err)
	}
	if want := "tool " + filepath.Join(bin, "boxd-test-tool") + "\n"; stdout.String() != want {
		t.Errorf("stdout %q; want %q", stdout.String(), want)
	}
	if _, err := run(context.Background(), Config{Cmd: []string{"boxd-test-tool"}, Env: []string{"PATH=/nonexistent"}}, true, "test"); err == nil {
		t.Error("a command missing from Env's PATH was found")
	}
}
