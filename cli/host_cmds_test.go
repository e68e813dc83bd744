package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/internal/golden"
)

// indent re-indents one JSON document as printJSON does, checking it is one.
func indent(t *testing.T, doc string) []byte {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, doc)
	}
	if dec.More() {
		t.Fatalf("more than one JSON document:\n%s", doc)
	}
	return []byte(doc)
}

func TestCLIJSON(t *testing.T) {
	d := startDaemon(t)
	golden.Check(t, "new.json", indent(t, d.ok("new", "--name", "task-1", "--cpus", "1", "--mem", "512M", "--disk", "10G", "--json")))
	d.ok("new", "--name", "task-2", "--json")
	golden.Check(t, "ls.json", indent(t, d.ok("ls", "--json")))
	golden.Check(t, "inspect.json", indent(t, d.ok("inspect", "task-1", "--json")))
	golden.Check(t, "exec.json", indent(t, d.ok("exec", "task-1", "--json", "echo 42; echo oops >&2; exit 3")))
	golden.Check(t, "reboot.json", indent(t, d.ok("reboot", "task-2", "--json")))
	golden.Check(t, "logs.json", indent(t, logsForGolden(t, d.ok("logs", "task-1", "--json"))))

	code, out, errs := d.run("", "inspect", "nope", "--json")
	if code != 1 || !strings.Contains(errs, `no VM named "nope"`) {
		t.Errorf("inspect nope: exit %d, stderr %q", code, errs)
	}
	golden.Check(t, "error.json", indent(t, out))

	code, out, _ = d.run("", "destroy", "task-1", "nope", "--json")
	if code != 1 {
		t.Errorf("destroy with a missing VM exited %d, want 1", code)
	}
	golden.Check(t, "destroy.json", indent(t, out))
	golden.Check(t, "destroy-all.json", indent(t, d.ok("destroy", "--all", "--json")))
	golden.Check(t, "ls-empty.json", indent(t, d.ok("ls", "--json")))
}

// logsForGolden keeps only the console's first line (the fake monitor's
// boot line, minus its random seed and clock) for comparison.
func logsForGolden(t *testing.T, doc string) string {
	t.Helper()
	var l logsJSON
	if err := json.Unmarshal([]byte(doc), &l); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.Console, "fake-vmm: agent ready") {
		t.Errorf("console %q lacks the fake's lines", l.Console)
	}
	first, _, _ := strings.Cut(l.Console, "\n")
	if i := strings.Index(first, " boxd.seed="); i >= 0 {
		first = first[:i]
	}
	l.Console = regexp.MustCompile(`bx[0-9a-f]{12}`).ReplaceAllString(first, "bx<id>")
	var b bytes.Buffer
	printJSON(&b, l)
	return b.String()
}

func TestCLIText(t *testing.T) {
	d := startDaemon(t)
	if out := d.ok("new", "--name", "t1", "--mem", "64M", "--disk", "1G"); out != "t1\n" {
		t.Errorf("new printed %q, want the name", out)
	}
	out := d.ok("ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "t1") || !strings.Contains(lines[1], "running") || !strings.Contains(lines[1], "10.88.0.2") {
		t.Errorf("ls:\n%s", out)
	}
	if out := d.ok("inspect", "t1"); !strings.Contains(out, "state:") || !strings.Contains(out, "running") {
		t.Errorf("inspect:\n%s", out)
	}
	if out := d.ok("destroy", "t1"); out != "t1\n" {
		t.Errorf("destroy printed %q", out)
	}
}

func TestCLIExec(t *testing.T) {
	d := startDaemon(t)
	d.ok("new", "--name", "x", "--mem", "64M", "--disk", "1G")
	tests := []struct {
		name     string
		stdin    string
		args     []string
		code     int
		out, err string
	}{
		{"shell string", "", []string{"exec", "x", "echo hi; exit 7"}, 7, "hi\n", ""},
		{"argv", "", []string{"exec", "x", "sh", "-c", "echo $0 $1", "a", "b"}, 0, "a b\n", ""},
		{"flags before the command", "", []string{"exec", "x", "--env", "V=1", "--workdir", "/tmp", "sh", "-c", "echo $V; pwd"}, 0, "1\n/tmp\n", ""},
		{"flags before the name", "", []string{"exec", "-e", "V=2", "x", "--", "sh", "-c", "echo $V"}, 0, "2\n", ""},
		{"command flags are not ours", "", []string{"exec", "x", "ls", "--json", "/nonexistent-dir"}, 2, "", ""},
		{"stdin", "piped\n", []string{"exec", "x", "cat"}, 0, "piped\n", ""},
		{"stderr", "", []string{"exec", "x", "echo e >&2"}, 0, "", "e\n"},
		{"signal", "", []string{"exec", "x", "kill -TERM $$"}, 143, "", ""},
		{"timeout", "", []string{"exec", "x", "--timeout", "100ms", "sleep 30"}, 137, "", "boxd: command timed out after 100ms\n"},
		{"not found", "", []string{"exec", "x", "/no/such"}, 127, "", ""},
		{"missing VM", "", []string{"exec", "nope", "true"}, 125, "", ""},
		{"no command", "", []string{"exec", "x"}, 1, "", ""},
		{"bad name", "", []string{"exec", "X", "true"}, 125, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := d.run(tt.stdin, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errs)
			}
			if out != tt.out {
				t.Errorf("stdout %q, want %q", out, tt.out)
			}
			if tt.err != "" && errs != tt.err {
				t.Errorf("stderr %q, want %q", errs, tt.err)
			}
		})
	}
	// --json: one document, exit 0 whatever the command's status.
	code, out, _ := d.run("in", "exec", "x", "--json", "cat; kill -9 $$")
	var res api.ExecResult
	if err := json.Unmarshal(indent(t, out), &res); err != nil || code != 0 {
		t.Fatalf("exec --json: exit %d, %v", code, err)
	}
	want := api.ExecResult{Output: "in", ExitCode: 137, Signal: "SIGKILL", DurationMs: res.DurationMs}
	if diff := cmp.Diff(want, res); diff != "" || res.DurationMs <= 0 {
		t.Errorf("exec --json (-want +got):\n%s", diff)
	}
}

func TestCLIShellAndCp(t *testing.T) {
	d := startDaemon(t)
	d.ok("new", "--name", "s", "--mem", "64M", "--disk", "1G")
	code, out, errs := d.run("echo in-shell $TERM\nexit 5\n", "shell", "s")
	if code != 5 || !strings.Contains(out, "in-shell") {
		t.Errorf("shell: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// The fake guest is this host: guest paths are host paths.
	src := filepath.Join(d.dir, "src.txt")
	os.WriteFile(src, []byte("payload"), 0o600)
	guestDir := filepath.Join(d.dir, "guest") + "/"
	os.Mkdir(guestDir, 0o755)
	out = d.ok("cp", "--json", src, "s:"+guestDir)
	var res cpJSON
	json.Unmarshal(indent(t, out), &res)
	want := cpJSON{Source: src, Destination: "s:" + guestDir + "src.txt", Bytes: 7}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("cp up (-want +got):\n%s", diff)
	}
	if fi, err := os.Stat(guestDir + "src.txt"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("uploaded file: %v, %v", fi, err)
	}
	localDir := filepath.Join(d.dir, "local")
	os.Mkdir(localDir, 0o755)
	d.ok("cp", "s:"+guestDir+"src.txt", localDir)
	if b, err := os.ReadFile(filepath.Join(localDir, "src.txt")); err != nil || string(b) != "payload" {
		t.Errorf("downloaded %q, %v", b, err)
	}
	code, out, _ = d.run("", "cp", "s:"+guestDir+"src.txt", "-")
	if code != 0 || out != "payload" {
		t.Errorf("cp to stdout: exit %d, %q", code, out)
	}
	code, _, _ = d.run("from stdin", "cp", "-", "s:"+guestDir+"stdin.txt")
	if b, _ := os.ReadFile(guestDir + "stdin.txt"); code != 0 || string(b) != "from stdin" {
		t.Errorf("cp from stdin: exit %d, %q", code, b)
	}
	for _, args := range [][]string{
		{"cp", "a", "b"},
		{"cp", "s:/a", "s:/b"},
		{"cp", "s:/no/such/file", filepath.Join(d.dir, "x")},
		{"cp", filepath.Join(d.dir, "missing"), "s:/tmp/x"},
	} {
		if code, _, errs := d.run("", args...); code != 1 || errs == "" {
			t.Errorf("boxd %v: exit %d, stderr %q; want 1 with a message", args, code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(d.dir, "x")); !os.IsNotExist(err) {
		t.Errorf("a failed download left a file: %v", err)
	}
}

// TestCLIDaemonCrash kills the daemon with SIGKILL: its monitors keep
// running (they are in their own sessions), and a new daemon reattaches.
func TestCLIDaemonCrash(t *testing.T) {
	d := startDaemon(t)
	var vm api.VM
	json.Unmarshal([]byte(d.ok("new", "--name", "keep", "--mem", "64M", "--disk", "1G", "--json")), &vm)
	d.ok("exec", "keep", "echo before > /dev/null")
	d.kill()
	if !alive(vm.PID) {
		t.Fatal("the monitor died with the daemon")
	}
	if code, _, errs := d.run("", "ls"); code != 1 || !strings.Contains(errs, "daemon not running at "+d.sock+": start it with `boxd daemon`") {
		t.Errorf("ls without a daemon: exit %d, stderr %q", code, errs)
	}
	d.start()
	var again api.VM
	json.Unmarshal([]byte(d.ok("inspect", "keep", "--json")), &again)
	if again.PID != vm.PID || again.State != "running" {
		t.Errorf("after the restart: pid %d state %s, want pid %d running", again.PID, again.State, vm.PID)
	}
	if out := d.ok("exec", "keep", "echo after"); out != "after\n" {
		t.Errorf("exec after the restart: %q", out)
	}
	// A clean stop leaves the VM running too.
	d.stop()
	if !alive(vm.PID) {
		t.Fatal("the monitor died with a stopped daemon")
	}
	d.start()
	if out := d.ok("exec", "keep", "echo again"); out != "again\n" {
		t.Errorf("exec after a clean restart: %q", out)
	}
	d.ok("destroy", "keep")
	if alive(vm.PID) {
		t.Error("destroy left the monitor running")
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

// waitExit waits, through a pidfd, until pid has exited.
func waitExit(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already reaped
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Until(deadline).Milliseconds()))
		if n == 1 {
			return
		}
		if (err != nil && err != unix.EINTR) || time.Now().After(deadline) {
			t.Fatalf("pid %d did not exit within 30s (%v)", pid, err)
		}
	}
}

func TestCLIQuotaAndNames(t *testing.T) {
	d := startDaemon(t, "--max-vms", "2")
	d.ok("new", "--name", "a", "--mem", "64M", "--disk", "1G")
	d.ok("new", "--name", "b", "--mem", "64M", "--disk", "1G")
	code, _, errs := d.run("", "new", "--name", "c")
	if code != 1 || !strings.Contains(errs, "quota exceeded: 2 VMs exist, the limit is 2") || !strings.Contains(errs, "boxd daemon --max-vms N") {
		t.Errorf("3rd VM: exit %d, stderr %q", code, errs)
	}
	for _, args := range [][]string{
		{"new", "--name", "Bad"},
		{"new", "--name", "a_b"},
		{"new", "--cpus", "3"},
		{"new", "--mem", "512"},
		{"new", "--disk", "1500M"},
		{"inspect", "ab_"},
	} {
		code, out, errs := d.run("", append(args, "--json")...)
		var doc struct{ Error *api.Error }
		if code != 1 || json.Unmarshal([]byte(out), &doc) != nil || doc.Error == nil || doc.Error.Message == "" || errs == "" {
			t.Errorf("boxd %v: exit %d, stdout %q, stderr %q; want 1 with an error document and message", args, code, out, errs)
		}
	}
}

func TestCLIVersion(t *testing.T) {
	d := startDaemon(t)
	out := d.ok("version", "--json")
	var v versionInfo
	if err := json.Unmarshal(indent(t, out), &v); err != nil || v.Daemon == nil || v.Daemon.API != api.Version {
		t.Errorf("version --json = %s (%v), want the daemon's version included", out, err)
	}
}

func TestCLIMonitorDeath(t *testing.T) {
	d := startDaemon(t)
	var vm api.VM
	json.Unmarshal([]byte(d.ok("new", "--name", "m", "--mem", "64M", "--disk", "1G", "--json")), &vm)
	d.kill() // the crash happens while no daemon runs
	syscall.Kill(vm.PID, syscall.SIGUSR2)
	waitExit(t, vm.PID)
	d.start()
	var got api.VM
	json.Unmarshal([]byte(d.ok("inspect", "m", "--json")), &got)
	if got.State != "crashed" || got.LastExit == nil || got.LastExit.Status != 4 {
		t.Errorf("after a crash while the daemon was down: %+v", got)
	}
	if out := d.ok("reboot", "m"); out != "m\n" {
		t.Errorf("reboot printed %q", out)
	}
	if out := d.ok("exec", "m", "echo revived"); out != "revived\n" {
		t.Errorf("exec after reboot: %q", out)
	}
}
