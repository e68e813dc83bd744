//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needRestore skips unless the monitor can restore snapshots (boxd vmm
// --restore), which fork, golden copies and resume from disk need.
func needRestore(t testing.TB) {
	t.Helper()
	out, err := exec.Command(boxdBin(t), "vmm", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--restore") {
		t.Skip("this boxd's monitor has no --restore yet")
	}
}

// memTmpfs mounts a tmpfs for the daemon's --mem-dir: the VMs' memory files
// and fork snapshots must share one tmpfs (forks hard-link memory layers),
// and the harness's root is not guaranteed to have one at /dev/shm.
func memTmpfs(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16g,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs for --mem-dir: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// forkVM is a VM in a fork's answer, with its timing.
type forkVM struct {
	vmDoc
	Timing struct {
		TotalMs   float64 `json:"total_ms"`
		RestoreMs float64 `json:"restore_ms"`
	} `json:"timing"`
}

type forkDoc struct {
	Source string   `json:"source"`
	Kind   string   `json:"kind"`
	VMs    []forkVM `json:"vms"`
	Errors []struct {
		Name  string          `json:"name"`
		Error json.RawMessage `json:"error"`
	} `json:"errors"`
	Timing struct {
		TotalMs        float64 `json:"total_ms"`
		ParentPausedMs float64 `json:"parent_paused_ms"`
		MonitorForkUs  int64   `json:"monitor_fork_us"`
		DiskClone      string  `json:"disk_clone"`
		DiskCloneMs    float64 `json:"disk_clone_ms"`
	} `json:"timing"`
}

// sh runs a shell command in a VM and returns its stdout; a non-zero exit
// fails the test.
func (d *daemon) sh(vm, cmd string) string {
	d.t.Helper()
	var ex struct {
		Output   string `json:"output"`
		Stderr   string `json:"stderr"`
		ExitCode int    `json:"exit_code"`
	}
	d.jsonCLI(&ex, "exec", vm, cmd)
	if ex.ExitCode != 0 {
		d.t.Fatalf("exec %s %q: exit %d, stderr %s", vm, cmd, ex.ExitCode, ex.Stderr)
	}
	return strings.TrimSpace(ex.Output)
}

// startCounter starts, in the guest, a counter that writes to a file ten
// times a second (renamed into place, so a reader never sees it empty) and
// an HTTP server serving that file, both detached from the exec.
const startCounter = `mkdir -p /srv && cd /srv && ` +
	`setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /srv/c.tmp; mv /srv/c.tmp /srv/counter; sleep 0.1; done' </dev/null >/dev/null 2>&1 & ` +
	`setsid python3 -m http.server 8000 --bind 127.0.0.1 --directory /srv </dev/null >/dev/null 2>&1 &`

func (d *daemon) counter(vm string) int {
	d.t.Helper()
	n, err := strconv.Atoi(d.sh(vm, "cat /srv/counter"))
	if err != nil {
		d.t.Fatalf("%s: counter: %v", vm, err)
	}
	return n
}

// waitServing waits until the counter started by startCounter runs and its
// HTTP server answers (python starts slowly in a nested guest).
func (d *daemon) waitServing(vm string) {
	d.t.Helper()
	waitFor(d.t, vm+"'s counter and HTTP server", 3*time.Minute, func() bool {
		out, _, code := d.cli("exec", vm, "curl -sf http://127.0.0.1:8000/counter")
		_, err := strconv.Atoi(strings.TrimSpace(out))
		return code == 0 && err == nil
	})
}

// wantCounting checks that vm's counter advances, and that its HTTP server
// serves it.
func (d *daemon) wantCounting(vm string) {
	d.t.Helper()
	first := d.counter(vm)
	waitFor(d.t, vm+"'s counter to advance", time.Minute, func() bool { return d.counter(vm) > first })
	got := d.sh(vm, "curl -sf http://127.0.0.1:8000/counter")
	if _, err := strconv.Atoi(got); err != nil {
		d.t.Errorf("%s: HTTP server answered %q, want the counter", vm, got)
	}
}

// wantClock checks that vm's clock is within a few seconds of the host's.
func (d *daemon) wantClock(vm string) {
	d.t.Helper()
	before := time.Now().Unix()
	s, err := strconv.ParseInt(d.sh(vm, "date +%s"), 10, 64)
	after := time.Now().Unix()
	if err != nil || s < before-3 || s > after+3 {
		d.t.Errorf("%s: guest clock %d (%v), host %d..%d", vm, s, err, before, after)
	}
}

func TestForkProcessesDiskIdentity(t *testing.T) {
	needKVM(t)
	needRestore(t)
	// On XFS the disks are raw files and fork clones them by reflink: O(1),
	// taken while the parent is paused.
	d := startDaemonXFS(t, "--mem-dir", memTmpfs(t))
	var p vmDoc
	d.jsonCLI(&p, "new", "--name=p", "--cpus", "1", "--mem", "512M", "--disk", "4G")
	d.sh("p", startCounter)
	d.waitServing("p")
	d.sh("p", "echo before > /root/before && sync")

	var res forkDoc
	d.jsonCLI(&res, "fork", "p", "--name", "c", "--count", "2")
	if len(res.VMs) != 2 || len(res.Errors) != 0 || res.Kind != "fork" {
		t.Fatalf("fork: %+v", res)
	}
	if res.Timing.DiskClone != "reflink" {
		t.Errorf("disks cloned by %q on XFS, want reflink", res.Timing.DiskClone)
	}
	t.Logf("fork of 2: total %.1f ms, parent paused %.1f ms (monitor fork %d µs, disks by %s in %.1f ms)",
		res.Timing.TotalMs, res.Timing.ParentPausedMs, res.Timing.MonitorForkUs, res.Timing.DiskClone, res.Timing.DiskCloneMs)

	names := []string{"p", "c-1", "c-2"}
	ips, hosts, randoms := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, n := range names {
		d.wantCounting(n)
		d.wantClock(n)
		if got := d.sh(n, "cat /root/before"); got != "before" {
			t.Errorf("%s: file written before the fork: %q", n, got)
		}
		var vm vmDoc
		d.jsonCLI(&vm, "inspect", n)
		h := d.sh(n, "hostname")
		ip := d.sh(n, "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1")
		r := d.sh(n, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
		if h != n || ip != vm.IP || ips[ip] || hosts[h] || randoms[r] {
			t.Errorf("%s: host name %q, address %q (recorded %q), urandom %s: want its own, unlike the others'", n, h, ip, vm.IP, r)
		}
		ips[ip], hosts[h], randoms[r] = true, true, true
	}
	// Files written after the fork diverge.
	for _, n := range names {
		d.sh(n, "echo "+n+" > /root/after")
	}
	for _, n := range names {
		if got := d.sh(n, "cat /root/after"); got != n {
			t.Errorf("%s: /root/after is %q, want its own write", n, got)
		}
	}
	// Outbound network from a copy (its new address is routed).
	if out := d.sh("c-1", "ip route show default"); !strings.Contains(out, "via") {
		t.Errorf("c-1: no default route after fork: %q", out)
	}
	// A fork of a fork: its memory is c-1's private pages over p's frozen
	// file, its disk c-1's.
	var res2 forkDoc
	d.jsonCLI(&res2, "fork", "c-1", "--name", "g")
	if len(res2.VMs) != 1 || len(res2.Errors) != 0 {
		t.Fatalf("fork of a fork: %+v", res2)
	}
	t.Logf("fork of a fork: total %.1f ms, parent paused %.1f ms (monitor fork %d µs)",
		res2.Timing.TotalMs, res2.Timing.ParentPausedMs, res2.Timing.MonitorForkUs)
	d.wantCounting("g")
	if got := d.sh("g", "cat /root/after"); got != "c-1" {
		t.Errorf("g: /root/after is %q, want its parent c-1's", got)
	}
	if h := d.sh("g", "hostname"); h != "g" {
		t.Errorf("g: host name %q", h)
	}
}

func TestSuspendResumeE2E(t *testing.T) {
	needKVM(t)
	needRestore(t)
	d := startDaemon(t, "--mem-dir", memTmpfs(t))
	var s vmDoc
	d.jsonCLI(&s, "new", "--name=s", "--cpus", "1", "--mem", "512M", "--disk", "4G")
	d.sh("s", startCounter)
	d.waitServing("s")

	// In memory.
	var v struct {
		vmDoc
		Snapshot string `json:"snapshot"`
		Timing   struct {
			TotalMs   float64 `json:"total_ms"`
			MonitorUs int64   `json:"monitor_us"`
			RestoreMs float64 `json:"restore_ms"`
		} `json:"timing"`
	}
	d.jsonCLI(&v, "suspend", "s")
	if v.State != "suspended" || v.PID != s.PID {
		t.Fatalf("suspend: %+v", v)
	}
	if _, stderr, code := d.cli("exec", "s", "true"); code == 0 || !strings.Contains(stderr, "boxd resume s") {
		t.Errorf("exec on a suspended VM: exit %d, %s", code, stderr)
	}
	d.jsonCLI(&v, "resume", "s")
	t.Logf("in-memory resume: %.3f ms total, monitor %d µs", v.Timing.TotalMs, v.Timing.MonitorUs)
	d.wantCounting("s")
	d.wantClock("s")

	// To disk.
	d.jsonCLI(&v, "suspend", "s", "--to-disk")
	if v.State != "suspended-to-disk" || v.PID != 0 || v.Snapshot == "" {
		t.Fatalf("suspend --to-disk: %+v", v)
	}
	snap := v.Snapshot
	d.jsonCLI(&v, "resume", "s")
	t.Logf("resume from disk: %.1f ms total, restore %.1f ms", v.Timing.TotalMs, v.Timing.RestoreMs)
	if v.State != "running" || v.IP != s.IP {
		t.Fatalf("resume: %+v", v)
	}
	d.wantCounting("s")
	d.wantClock("s")

	// A corrupt snapshot is refused, and the VM is not lost.
	d.jsonCLI(&v, "suspend", "s", "--to-disk")
	if v.Snapshot == snap {
		t.Errorf("a second suspend reused the snapshot folder %s", snap)
	}
	restore := corruptState(t, v.Snapshot)
	out, stderr, code := d.cli("resume", "s", "--json")
	if code == 0 {
		t.Fatalf("resume of a corrupt snapshot succeeded: %s", out)
	}
	t.Logf("corrupt snapshot refused: %s", strings.TrimSpace(out+stderr))
	d.jsonCLI(&v, "inspect", "s")
	if v.State != "suspended-to-disk" || v.Snapshot == "" {
		t.Fatalf("after a refused resume: %+v", v)
	}
	restore()
	d.jsonCLI(&v, "resume", "s")
	d.wantCounting("s")
}

// corruptState flips bytes in the middle of the snapshot's state file (the
// non-memory files: every file but the largest) and returns a function
// that puts them back.
func corruptState(t *testing.T, dir string) func() {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	type file struct {
		path string
		size int64
	}
	var files []file
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
			files = append(files, file{filepath.Join(dir, e.Name()), fi.Size()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].size < files[j].size })
	if len(files) < 2 {
		t.Fatalf("snapshot %s: %d files, want a state file and memory", dir, len(files))
	}
	state := files[0]
	for _, f := range files {
		if strings.Contains(filepath.Base(f.path), "state") {
			state = f
		}
	}
	orig, err := os.ReadFile(state.path)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	for i := len(bad) / 2; i < len(bad)/2+8 && i < len(bad); i++ {
		bad[i] ^= 0xff
	}
	os.Chmod(state.path, 0o600)
	if err := os.WriteFile(state.path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped 8 bytes of %s", state.path)
	return func() {
		if err := os.WriteFile(state.path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGoldenE2E(t *testing.T) {
	needKVM(t)
	needRestore(t)
	d := startDaemon(t, "--mem-dir", memTmpfs(t))
	d.jsonCLI(new(vmDoc), "new", "--name=gold", "--cpus", "1", "--mem", "512M", "--disk", "4G")
	d.sh("gold", startCounter+" echo prepared > /root/app")
	d.waitServing("gold")
	var g struct {
		vmDoc
		Snapshot string `json:"snapshot"`
	}
	d.jsonCLI(&g, "suspend", "gold", "--to-disk")
	mtimes := snapshotMtimes(t, g.Snapshot)
	for _, n := range []string{"w1", "w2"} {
		var vm vmDoc
		d.jsonCLI(&vm, "new", "--from", "gold", "--name", n)
		if vm.State != "running" {
			t.Fatalf("%s: %+v", n, vm)
		}
		d.wantCounting(n)
		d.wantClock(n)
		if h := d.sh(n, "hostname"); h != n {
			t.Errorf("%s: host name %q", n, h)
		}
		if a := d.sh(n, "cat /root/app"); a != "prepared" {
			t.Errorf("%s: the golden's file reads %q", n, a)
		}
		d.sh(n, "echo "+n+" > /root/app")
	}
	d.jsonCLI(&g, "inspect", "gold")
	if g.State != "suspended-to-disk" {
		t.Errorf("golden after copies: %s", g.State)
	}
	if got := snapshotMtimes(t, g.Snapshot); !mapsEqual(got, mtimes) {
		t.Errorf("the golden's snapshot changed: %v, was %v", got, mtimes)
	}
}

func snapshotMtimes(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]time.Time{}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			m[e.Name()] = fi.ModTime()
		}
	}
	return m
}

func mapsEqual(a, b map[string]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !b[k].Equal(v) {
			return false
		}
	}
	return true
}
