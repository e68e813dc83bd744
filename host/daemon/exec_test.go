package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/boxd-dev/boxd/host/api"
)

var ignoreDuration = cmpopts.IgnoreFields(api.ExecResult{}, "DurationMs")

func TestExecExitCodes(t *testing.T) {
	h := newHarness(t)
	h.create(api.CreateRequest{Name: "x", MemMiB: 64, DiskGiB: 1})
	tests := []struct {
		name string
		req  api.ExecRequest
		want api.ExecResult
	}{
		{"ok", api.ExecRequest{Shell: "echo hi"}, api.ExecResult{Output: "hi\n"}},
		{"code", api.ExecRequest{Shell: "echo out; echo err >&2; exit 7"}, api.ExecResult{Output: "out\n", Stderr: "err\n", ExitCode: 7}},
		{"argv", api.ExecRequest{Argv: []string{"printf", "%s|", "a b", "c"}}, api.ExecResult{Output: "a b|c|"}},
		{"env and workdir", api.ExecRequest{Shell: "echo $FOO; pwd", Env: []string{"FOO=bar"}, Workdir: "/tmp"}, api.ExecResult{Output: "bar\n/tmp\n"}},
		{"stdin", api.ExecRequest{Argv: []string{"cat"}, Stdin: "fed\n"}, api.ExecResult{Output: "fed\n"}},
		{"signal", api.ExecRequest{Shell: "kill -9 $$"}, api.ExecResult{ExitCode: 137, Signal: "SIGKILL"}},
		{"timeout", api.ExecRequest{Argv: []string{"sleep", "60"}, TimeoutMs: 100}, api.ExecResult{ExitCode: 137, Signal: "SIGKILL", TimedOut: true}},
		{"not found", api.ExecRequest{Argv: []string{"/no/such/program"}}, api.ExecResult{ExitCode: 127}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := h.exec("x", tt.req)
			if tt.want.ExitCode == 127 {
				if !strings.Contains(got.Stderr, "/no/such/program") {
					t.Errorf("stderr %q does not name the missing program", got.Stderr)
				}
				got.Stderr = ""
			}
			if diff := cmp.Diff(tt.want, got, ignoreDuration); diff != "" {
				t.Errorf("non-streaming (-want +got):\n%s", diff)
			}
			if tt.req.Stdin != "" {
				return // a streamed session sends stdin in frames
			}
			var out, errs bytes.Buffer
			res, err := h.c.ExecStream(context.Background(), "x", tt.req, nil, &out, &errs)
			if err != nil {
				t.Fatal(err)
			}
			res.Output, res.Stderr = out.String(), errs.String()
			if tt.want.ExitCode == 127 {
				res.Stderr = ""
			}
			if diff := cmp.Diff(tt.want, res, ignoreDuration); diff != "" {
				t.Errorf("streaming (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExecInvalid(t *testing.T) {
	h := newHarness(t)
	h.create(api.CreateRequest{Name: "x", MemMiB: 64, DiskGiB: 1})
	for _, req := range []api.ExecRequest{
		{},
		{Shell: "a", Argv: []string{"b"}},
		{Shell: "true", Env: []string{"NOEQUALS"}},
		{Shell: "true", Workdir: "relative"},
		{Shell: "true", TimeoutMs: -1},
		{Shell: "true", Rows: 10},
	} {
		if _, err := h.c.Exec(context.Background(), "x", req); apiCode(err) != api.CodeInvalid {
			t.Errorf("exec %+v = %v, want invalid_argument", req, err)
		}
	}
	if _, err := h.c.Exec(context.Background(), "nope", api.ExecRequest{Shell: "true"}); apiCode(err) != api.CodeNotFound {
		t.Errorf("exec in a missing VM = %v", err)
	}
	if _, err := h.c.StartExec(context.Background(), "nope", api.ExecRequest{Shell: "true"}); apiCode(err) != api.CodeNotFound {
		t.Errorf("streamed exec in a missing VM = %v", err)
	}
}

// TestExecStreamsLive checks output arrives while the command runs, and
// that stdin is forwarded as it is sent.
func TestExecStreamsLive(t *testing.T) {
	h := newHarness(t)
	h.create(api.CreateRequest{Name: "s", MemMiB: 64, DiskGiB: 1})
	s, err := h.c.StartExec(context.Background(), "s", api.ExecRequest{Shell: "echo ready; read line; echo got:$line; echo bye >&2; exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	outR, outW := io.Pipe()
	var errs bytes.Buffer
	done := make(chan struct{})
	var res api.ExecResult
	var werr error
	go func() {
		res, werr = s.Wait(outW, &errs)
		outW.Close()
		close(done)
	}()
	lines := bufio.NewReader(outR)
	if l, err := lines.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("first line %q, %v", l, err)
	}
	// The command now waits for input: "ready" was streamed before exit.
	if _, err := s.WriteStdin([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := lines.ReadString('\n'); err != nil || l != "got:ping\n" {
		t.Fatalf("second line %q, %v", l, err)
	}
	io.Copy(io.Discard, lines)
	<-done
	if werr != nil || res.ExitCode != 3 || errs.String() != "bye\n" {
		t.Errorf("result %+v, stderr %q, %v", res, errs.String(), werr)
	}
}

func TestExecTTY(t *testing.T) {
	h := newHarness(t)
	h.create(api.CreateRequest{Name: "t", MemMiB: 64, DiskGiB: 1})
	var out bytes.Buffer
	res, err := h.c.ExecStream(context.Background(), "t", api.ExecRequest{Shell: "stty size; tty -s && echo tty", TTY: true, Rows: 33, Cols: 101}, nil, &out, io.Discard)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %+v, %v", res, err)
	}
	if got := strings.ReplaceAll(out.String(), "\r", ""); got != "33 101\ntty\n" {
		t.Errorf("output %q, want the terminal's size and a tty", got)
	}
}

// TestExecClientGone checks that a client that disconnects kills its command.
func TestExecClientGone(t *testing.T) {
	h := newHarness(t)
	h.create(api.CreateRequest{Name: "g", MemMiB: 64, DiskGiB: 1})
	pidFile := filepath.Join(h.dir, "pid")
	s, err := h.c.StartExec(context.Background(), "g", api.ExecRequest{Shell: "echo $$ > " + pidFile + "; echo started; exec sleep 600"})
	if err != nil {
		t.Fatal(err)
	}
	r, w := io.Pipe()
	go s.Wait(w, io.Discard)
	if l, err := bufio.NewReader(r).ReadString('\n'); err != nil || l != "started\n" {
		t.Fatalf("read %q, %v", l, err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for _, c := range strings.TrimSpace(string(data)) {
		pid = pid*10 + int(c-'0')
	}
	s.Close()
	waitGone(t, pid)
}

func TestFiles(t *testing.T) {
	h := newHarness(t)
	h.create(api.CreateRequest{Name: "f", MemMiB: 64, DiskGiB: 1})
	ctx := context.Background()
	// The fake guest is this host, so guest paths are host paths.
	path := filepath.Join(h.dir, "up.txt")
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	res, err := h.c.WriteFile(ctx, "f", path, 0o640, bytes.NewReader(data))
	if err != nil || res.Bytes != int64(len(data)) || res.Path != path {
		t.Fatalf("upload = %+v, %v", res, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("uploaded file: %v, %v", fi, err)
	}
	rc, info, err := h.c.ReadFile(ctx, "f", path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) || info.Size != int64(len(data)) || info.Mode != 0o640 {
		t.Errorf("download: %d bytes (want %d), info %+v, %v", len(got), len(data), info, err)
	}
	if _, _, err := h.c.ReadFile(ctx, "f", filepath.Join(h.dir, "missing")); apiCode(err) != api.CodeNotFound {
		t.Errorf("download of a missing file = %v, want not_found", err)
	}
	if _, _, err := h.c.ReadFile(ctx, "f", h.dir); apiCode(err) != api.CodeInvalid || !strings.Contains(err.Error(), "directory") {
		t.Errorf("download of a folder = %v", err)
	}
	if _, _, err := h.c.ReadFile(ctx, "f", "relative"); apiCode(err) != api.CodeInvalid {
		t.Errorf("download of a relative path = %v", err)
	}
	if _, err := h.c.WriteFile(ctx, "f", filepath.Join(h.dir, "no/such/dir/x"), 0o644, strings.NewReader("x")); err == nil {
		t.Error("upload into a missing folder succeeded")
	}
}

func TestLogs(t *testing.T) {
	h := newHarness(t)
	vm := h.create(api.CreateRequest{Name: "l", MemMiB: 64, DiskGiB: 1})
	var buf bytes.Buffer
	if err := h.c.Logs(context.Background(), "l", false, &buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "fake-vmm: boot") || !strings.Contains(buf.String(), "boxd.hostname=l") {
		t.Errorf("console log %q lacks the boot line with the hostname", buf.String())
	}
	if err := h.c.Logs(context.Background(), "nope", false, &buf); apiCode(err) != api.CodeNotFound {
		t.Errorf("logs of a missing VM = %v", err)
	}

	// Follow: what the guest prints later arrives, and destroy ends it.
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- h.c.Logs(context.Background(), "l", true, w); w.Close() }()
	lines := bufio.NewReader(r)
	for {
		l, err := lines.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(l, "agent ready") {
			break
		}
	}
	console := filepath.Join(h.cfg.StateDir, "vms", vm.ID, "console.log")
	f, err := os.OpenFile(console, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("later line\n")
	f.Close()
	if l, err := lines.ReadString('\n'); err != nil || l != "later line\n" {
		t.Fatalf("followed %q, %v", l, err)
	}
	go io.Copy(io.Discard, lines)
	if _, err := h.c.Destroy(context.Background(), "l"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("follow did not end when the VM was destroyed")
	}
}
