//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond until it holds or the deadline passes: a readiness check
// on state the daemon reports, not a timing assertion.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := 100 * time.Millisecond; !cond(); delay = min(2*delay, 2*time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(delay)
	}
}

// TestDaemonQuotaRebootRestartNetwork checks, on real VMs: the quota refusal;
// a file written in a VM survives a reboot from inside the guest and a daemon
// restart (the new daemon reattaches to the running monitors); the guest
// reaches an HTTP server in a test namespace through NAT but not another VM;
// destroy removes monitors and TAPs.
func TestDaemonQuotaRebootRestartNetwork(t *testing.T) {
	needKVM(t)
	d := startDaemon(t, "--max-vms", "2")
	var a, b vmDoc
	d.jsonCLI(&a, "new", "--name=a", "--cpus", "1", "--mem", "512M", "--disk", "4G")
	d.jsonCLI(&b, "new", "--name=b", "--cpus", "1", "--mem", "512M", "--disk", "4G")

	// Quota: a third VM is refused with a clear error.
	out, _, code := d.cli("new", "--json", "--name=c", "--mem", "512M", "--disk", "4G")
	var e struct {
		Error struct{ Code, Message, Hint string } `json:"error"`
	}
	if json.Unmarshal([]byte(out), &e); code == 0 || e.Error.Code != "quota_exceeded" {
		t.Fatalf("third VM: exit %d, %s; want a quota_exceeded error", code, out)
	}
	t.Logf("quota error: %s (%s)", e.Error.Message, e.Error.Hint)

	exec1 := func(vm, cmd string) (string, int) {
		var ex struct {
			Output   string `json:"output"`
			Stderr   string `json:"stderr"`
			ExitCode int    `json:"exit_code"`
		}
		d.jsonCLI(&ex, "exec", vm, cmd)
		return ex.Output, ex.ExitCode
	}
	if _, c := exec1("a", "echo persisted > /root/file && sync"); c != 0 {
		t.Fatalf("write file: exit %d", c)
	}

	// Reboot from inside the guest: the monitor exits with "reboot" and the
	// daemon starts the VM again on the same disk.
	d.cli("exec", "a", "reboot")
	waitFor(t, "VM a to come back after its reboot", 4*time.Minute, func() bool {
		var vm vmDoc
		d.jsonCLI(&vm, "inspect", "a")
		return vm.Restarts >= 1 && vm.State == "running"
	})
	if got, _ := exec1("a", "cat /root/file"); got != "persisted\n" {
		t.Fatalf("after reboot: /root/file = %q", got)
	}

	// Daemon restart: the VMs keep running and the new daemon reattaches.
	d.cmd.Process.Signal(os.Interrupt)
	d.cmd.Wait()
	d2 := startDaemonOn(t, d, "--max-vms", "2")
	if got, _ := exec1("a", "cat /root/file"); got != "persisted\n" {
		t.Fatalf("after daemon restart: /root/file = %q", got)
	}
	d = d2

	// NAT: an HTTP server in a namespace that only knows the host's address.
	ns := netns(t)
	run(t, "ip", "link", "add", "e2e-out", "type", "veth", "peer", "name", "e2e-in", "netns", ns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", "e2e-out").Run() })
	run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "e2e-out")
	run(t, "ip", "link", "set", "e2e-out", "up")
	run(t, "ip", "-n", ns, "addr", "add", "198.51.100.2/24", "dev", "e2e-in")
	run(t, "ip", "-n", ns, "link", "set", "e2e-in", "up")
	www := t.TempDir()
	if err := os.WriteFile(www+"/hello.txt", []byte("hello through NAT\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", "198.51.100.2:8080", "-h", www)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	var got string
	waitFor(t, "the guest to fetch from the test server through NAT", time.Minute, func() bool {
		got, _ = exec1("a", "curl -s --max-time 5 http://198.51.100.2:8080/hello.txt")
		return got != ""
	})
	if got != "hello through NAT\n" {
		t.Fatalf("guest fetched %q", got)
	}

	// Isolation: b cannot reach a server in a, which a itself reaches.
	if _, c := exec1("a", "setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null & echo started"); c != 0 {
		t.Fatal("start server in a")
	}
	waitFor(t, "the server in a", time.Minute, func() bool {
		_, c := exec1("a", "curl -s --max-time 2 -o /dev/null http://127.0.0.1:8000/")
		return c == 0
	})
	if _, c := exec1("b", "curl -s --max-time 5 -o /dev/null http://"+a.IP+":8000/"); c == 0 {
		t.Fatalf("VM b reached VM a at %s", a.IP)
	}

	// Destroy removes both, their monitors and TAPs.
	if _, stderr, code := d.cli("destroy", "--all"); code != 0 {
		t.Fatalf("destroy --all: %s", stderr)
	}
	for _, vm := range []vmDoc{a, b} {
		if err := exec.Command("ip", "link", "show", vm.TAP).Run(); err == nil {
			t.Errorf("TAP %s of %s remains", vm.TAP, vm.Name)
		}
	}
	waitFor(t, "monitors to exit", time.Minute, func() bool {
		for _, vm := range []vmDoc{a, b} {
			if _, err := os.Stat("/proc/" + strconv.Itoa(vm.PID)); err == nil {
				if st, _ := os.ReadFile("/proc/" + strconv.Itoa(vm.PID) + "/stat"); !strings.Contains(string(st), ") Z ") {
					return false
				}
			}
		}
		return true
	})
}
