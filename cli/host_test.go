package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/internal/fakevmm"
)

// fakeBackends gives the test daemon a network that only hands out
// addresses and a storage of sparse files under the state directory.
func fakeBackends(f daemonFlags) (daemon.Network, daemon.Storage, error) {
	dir := filepath.Join(f.stateDir, "disks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	return &fakeNet{}, fakeDisks(dir), nil
}

type fakeNet struct {
	mu   sync.Mutex
	used map[netip.Addr]bool
}

func (n *fakeNet) Start(_ context.Context, leases []daemon.Lease) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.used = map[netip.Addr]bool{}
	for _, l := range leases {
		n.used[l.Address.Addr()] = true
	}
	return nil
}

func (n *fakeNet) Attach(_ context.Context, id string) (daemon.Lease, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for h := 2; h < 255; h++ {
		a := netip.AddrFrom4([4]byte{10, 88, 0, byte(h)})
		if !n.used[a] {
			n.used[a] = true
			return daemon.Lease{VMID: id, TAP: "bx" + id, MAC: fmt.Sprintf("52:54:00:00:00:%02x", h),
				Address: netip.PrefixFrom(a, 16), Gateway: netip.MustParseAddr("10.88.0.1"),
				DNS: []netip.Addr{netip.MustParseAddr("10.88.0.1")}}, nil
		}
	}
	return daemon.Lease{}, fmt.Errorf("no address left")
}

func (n *fakeNet) Detach(_ context.Context, l daemon.Lease) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.used, l.Address.Addr())
	return nil
}

func (n *fakeNet) Close() error { return nil }

type fakeDisks string

func (d fakeDisks) CreateDisk(_ context.Context, id string, size int64) (string, error) {
	p := filepath.Join(string(d), id+".img")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return p, f.Truncate(size)
}

func (d fakeDisks) DeleteDisk(_ context.Context, id string) error {
	err := os.Remove(filepath.Join(string(d), id+".img"))
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

func (d fakeDisks) CloneDisk(_ context.Context, src, dst string, _ bool) (daemon.DiskClone, error) {
	fi, err := os.Stat(filepath.Join(string(d), src+".img"))
	if err != nil {
		return daemon.DiskClone{}, err
	}
	p, err := d.CreateDisk(context.Background(), dst, fi.Size())
	return daemon.DiskClone{Path: p, Method: "copy"}, err
}

// fakeProbe reads the fake guest's identity (see fakevmm.ReadGuest).
func fakeProbe(ctx context.Context, c *agent.Client, vmDir string) (daemon.GuestFacts, error) {
	sent := time.Now()
	g, err := fakevmm.ReadGuest(ctx, c, vmDir)
	if err != nil {
		return daemon.GuestFacts{}, err
	}
	f := daemon.GuestFacts{Hostname: g.Hostname, Time: g.Time(), Sent: sent, Received: time.Now(), Random: g.Random()}
	if p, err := netip.ParsePrefix(g.Address); err == nil {
		f.Addrs = []netip.Addr{p.Addr()}
	}
	return f, nil
}

// testDaemon is `boxd daemon` running as a child process of the test.
type testDaemon struct {
	t      *testing.T
	dir    string
	sock   string
	args   []string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	ready  daemonReady
}

func startDaemon(t *testing.T, extra ...string) *testDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "bxc")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinux", "rootfs.img"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("fake"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := &testDaemon{t: t, dir: dir, sock: filepath.Join(dir, "boxd.sock")}
	d.args = append([]string{"daemon", "--json", "--state-dir", filepath.Join(dir, "state"), "--socket", d.sock,
		"--kernel", filepath.Join(dir, "vmlinux"), "--image", filepath.Join(dir, "rootfs.img"), "--boot-timeout", "30s",
		"--mem-dir", filepath.Join(dir, "mem")}, extra...)
	t.Cleanup(func() {
		d.kill()
		d.killMonitors()
		os.RemoveAll(dir)
	})
	d.start()
	return d
}

// start runs the daemon and waits for its ready document (printed once it
// listens), not for a fixed time.
func (d *testDaemon) start() {
	d.t.Helper()
	d.stderr.Reset()
	cmd := exec.Command(os.Args[0], d.args...)
	cmd.Env = append(os.Environ(), daemonEnv+"=1", fakevmm.Env+"=1")
	cmd.Stderr = &d.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = cmd
	dec := json.NewDecoder(bufio.NewReader(out))
	if err := dec.Decode(&d.ready); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		d.t.Fatalf("daemon did not get ready: %v\nstderr:\n%s", err, d.stderr.String())
	}
	go io.Copy(io.Discard, out)
}

// stop stops the daemon with SIGTERM, as systemd would.
func (d *testDaemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		d.t.Errorf("daemon exited with %v\nstderr:\n%s", err, d.stderr.String())
	}
	d.cmd = nil
}

// kill kills the daemon with SIGKILL, as a crash would.
func (d *testDaemon) kill() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd = nil
}

// killMonitors kills the fake monitors the daemon left (found by their
// command line, which names this test's state directory).
func (d *testDaemon) killMonitors() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(d.dir+"/")) || !bytes.Contains(b, []byte("vmm\x00")) {
			continue
		}
		var pid int
		fmt.Sscanf(strings.TrimPrefix(p, "/proc/"), "%d", &pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// run runs a CLI command in this process against the daemon and returns its
// exit status, stdout and stderr.
func (d *testDaemon) run(stdin string, args ...string) (int, string, string) {
	d.t.Helper()
	var out, errb bytes.Buffer
	code := Main(append(args[:1:1], append([]string{"--socket", d.sock}, args[1:]...)...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed.
func (d *testDaemon) ok(args ...string) string {
	d.t.Helper()
	code, out, errs := d.run("", args...)
	if code != 0 {
		d.t.Fatalf("boxd %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}
