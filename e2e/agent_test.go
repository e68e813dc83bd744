//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	guestrd "github.com/boxd-dev/boxd/guest-init/initramfs"
)

// TestAgentInVM drives the guest agent of a VM booted from the Debian image
// through every kind of request an AI agent makes, each checked for exact
// output and status; it prints boot-to-agent-ready and exec round trips.
func TestAgentInVM(t *testing.T) {
	needKVM(t)
	disk, why := rootDisk(t)
	if disk == "" {
		t.Fatalf("root image: %s (make image builds it)", why)
	}
	dir := t.TempDir()
	sock, console, result := filepath.Join(dir, "vsock.sock"), filepath.Join(dir, "console.log"), filepath.Join(dir, "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	exited, dump := startMonitor(t, ctx, console, "vmm", "--kernel", guestKernel(t), "--initrd", guestInitramfs(t, guestrd.None),
		"--mem-mib", "1024", "--cpus", "2", "--console", console, "--result-json", result,
		"--vsock", "cid=3,path="+sock, "--disk", disk, "--cmdline", "boxd.root=/dev/vda boxd.hostname=agent-e2e")
	defer func() {
		if t.Failed() {
			dump()
		}
	}()
	c := dialAgent(t, ctx, sock, exited, dump)
	defer c.Close()

	run := func(req agent.ExecRequest) (string, string, agent.ExitStatus) {
		t.Helper()
		var out, errOut bytes.Buffer
		req.Stdout, req.Stderr = &out, &errOut
		p, err := c.Exec(ctx, req)
		if err != nil {
			t.Fatalf("exec %q%q: %v", req.Shell, req.Argv, err)
		}
		st, err := p.Wait()
		if err != nil {
			t.Fatalf("exec %q%q: wait: %v", req.Shell, req.Argv, err)
		}
		return out.String(), errOut.String(), st
	}

	// uname -a.
	if out, _, st := run(agent.ExecRequest{Argv: []string{"uname", "-a"}}); st.Code != 0 || !strings.HasPrefix(out, "Linux agent-e2e 6.1") {
		t.Errorf("uname -a = %q, %+v", out, st)
	}
	// A command reading stdin.
	in := []byte("line one\nline two\n\x00binary\xff\n")
	if out, _, st := run(agent.ExecRequest{Argv: []string{"cat"}, Stdin: bytes.NewReader(in)}); st.Code != 0 || out != string(in) {
		t.Errorf("cat of stdin = %q, %+v", out, st)
	}
	// Exit status 3.
	if _, _, st := run(agent.ExecRequest{Shell: "exit 3"}); st.Code != 3 || st.Signal != 0 {
		t.Errorf("exit 3 = %+v", st)
	}
	// 5 MB on stdout and 5 MB on stderr, interleaved in 4 KiB writes.
	const half = 5 << 20
	out, errOut, st := run(agent.ExecRequest{Argv: []string{"python3", "-c", `
import os
a, b = b"o" * 4095 + b"\n", b"e" * 4095 + b"\n"
for _ in range(1280):
    os.write(1, a)
    os.write(2, b)
`}})
	if st.Code != 0 || out != strings.Repeat(strings.Repeat("o", 4095)+"\n", 1280) || errOut != strings.Repeat(strings.Repeat("e", 4095)+"\n", 1280) {
		t.Errorf("interleaved 5 MB: stdout %d bytes, stderr %d bytes (want %d each, exact), %+v", len(out), len(errOut), half, st)
	}
	// A command killed by its timeout, and really gone afterwards.
	if _, _, st := run(agent.ExecRequest{Shell: "sleep 1000", Timeout: time.Second}); !st.TimedOut || st.Signal == 0 {
		t.Errorf("sleep with timeout = %+v, want killed by its timeout", st)
	}
	if out, _, _ := run(agent.ExecRequest{Shell: "pgrep -x sleep || true"}); out != "" {
		t.Errorf("sleep still running after its timeout: pids %q", out)
	}
	// A PTY session with a window resize.
	p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"/bin/bash", "--norc", "-i"}, OpenStdin: true, PTY: &agent.PTY{Rows: 24, Cols: 80, Term: "xterm"}})
	if err != nil {
		t.Fatal(err)
	}
	// Read the terminal until the first command's answer, then resize: the
	// second "stty size" must see the new window.
	var tty bytes.Buffer
	buf := make([]byte, 4096)
	io.WriteString(p.Stdin, "stty size; echo M=$((6*7))\n")
	for !strings.Contains(tty.String(), "M=42\r\n") {
		n, err := p.Stdout.Read(buf)
		tty.Write(buf[:n])
		if err != nil {
			t.Fatalf("PTY: %v\n%q", err, tty.String())
		}
	}
	if err := p.Resize(40, 100); err != nil {
		t.Fatal(err)
	}
	io.WriteString(p.Stdin, "stty size; exit 5\n")
	io.Copy(&tty, p.Stdout)
	st, err = p.Wait()
	if err != nil || st.Code != 5 || !strings.Contains(tty.String(), "M=42") || !strings.Contains(tty.String(), "24 80") || !strings.Contains(tty.String(), "40 100") {
		t.Errorf("PTY session: %+v, %v\n%q", st, err, tty.String())
	}
	// A background process, re-attached after it finished: its output is replayed.
	info, err := c.Spawn(ctx, agent.ExecRequest{Shell: "for i in 1 2 3; do echo bg$i; sleep 0.1; done; exit 4"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.WaitProcess(ctx, info.ID); err != nil || st.Code != 4 {
		t.Errorf("background process: %+v, %v", st, err)
	}
	// Separate buffers: two copies into one bytes.Buffer race (ReadFrom).
	var bg, bgErr bytes.Buffer
	ap, err := c.Attach(ctx, info.ID, agent.AttachOptions{Stdout: &bg, Stderr: &bgErr})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := ap.Wait(); err != nil || st.Code != 4 || bg.String() != "bg1\nbg2\nbg3\n" || bgErr.Len() != 0 {
		t.Errorf("re-attach: %q, stderr %q, %+v, %v", bg.String(), bgErr.String(), st, err)
	}
	// 20 MB up and down, checked on both sides.
	data := make([]byte, 20<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	if err := c.WriteFile(ctx, "/root/big", 0o600, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := run(agent.ExecRequest{Shell: "sha256sum /root/big | cut -d' ' -f1"}); strings.TrimSpace(out) != hexString(sum[:]) {
		t.Errorf("guest sha256 of upload = %q, want %x", out, sum)
	}
	rc, fi, err := c.ReadFile(ctx, "/root/big")
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(back, data) || fi.Size != int64(len(data)) {
		t.Errorf("download: %d bytes, %v; info %+v", len(back), err, fi)
	}

	// Round trips, printed: exec of true against a bare agent ping, same VM,
	// same run (BenchmarkExecRoundTrip measures them properly, with the
	// guest's own spawn floor and the boot share).
	const n = 30
	var execMs, pingMs []float64
	for range n {
		t0 := time.Now()
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		pingMs = append(pingMs, msSince(t0))
		t0 = time.Now()
		if _, _, st := run(agent.ExecRequest{Argv: []string{"true"}}); st.Code != 0 {
			t.Fatal("true failed")
		}
		execMs = append(execMs, msSince(t0))
	}
	t.Logf("round trips over vsock (n=%d): ping median %.2f ms, exec true median %.2f ms, ratio %.2f (target <= 2)",
		n, median(pingMs), median(execMs), median(execMs)/median(pingMs))

	// Power off from inside, then read the boot-timer marks.
	if p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"poweroff"}}); err == nil {
		p.Wait()
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatal("VM still running after poweroff")
	}
	var r struct {
		BootMarks []struct {
			ID uint64  `json:"id"`
			Ms float64 `json:"ms"`
		} `json:"boot_marks"`
	}
	if b, err := os.ReadFile(result); err == nil && json.Unmarshal(b, &r) == nil && len(r.BootMarks) >= 2 {
		t.Logf("boot timer: init started at %.1f ms, agent ready at %.1f ms (init + agent: %.1f ms)",
			r.BootMarks[0].Ms, r.BootMarks[1].Ms, r.BootMarks[1].Ms-r.BootMarks[0].Ms)
	} else {
		t.Errorf("boot-timer marks missing from %s", result)
	}
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
