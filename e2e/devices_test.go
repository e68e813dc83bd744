//go:build e2e

package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fileSHA256 hashes a host file.
func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// one returns the single value printed after prefix, failing otherwise.
func one(t testing.TB, console, prefix string) string {
	t.Helper()
	got := marks(console, prefix)
	if len(got) != 1 {
		t.Fatalf("want one %q line, got %q\nconsole:\n%s", prefix, got, console)
	}
	return got[0]
}

// TestDisk: the guest makes an ext4 filesystem on its virtio disk and writes a
// file; the bytes are in the host file after the VM stops; a second boot reads
// them back; a read-only disk refuses writes and stays unchanged.
func TestDisk(t *testing.T) {
	needKVM(t)
	k := guestKernel(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 1<<30); err != nil { // sparse 1 GiB
		t.Fatal(err)
	}
	boot := func(script string, diskArg string) vmmRun {
		rd := filepath.Join(t.TempDir(), "rd.cpio")
		if err := writeInitrd(rd, guestScript(script), "/sbin/mke2fs"); err != nil {
			t.Fatal(err)
		}
		r := runVMM(t, 5*time.Minute, "--kernel", k, "--initrd", rd, "--mem-mib", "256", "--disk", diskArg)
		if r.Status != 0 || one(t, r.Console, "E2E-STATUS") != "0" {
			t.Fatalf("guest failed: status %d %+v\nconsole:\n%s\nstderr:\n%s", r.Status, r.Result, r.Console, r.Stderr)
		}
		return r
	}

	r := boot(`/sbin/mke2fs -q -t ext4 -F /dev/vda
mount -t ext4 /dev/vda /mnt
dd if=/dev/urandom of=/mnt/data bs=1M count=4 2>/dev/null
sync
echo "E2E sha=$(sha256sum /mnt/data | cut -d' ' -f1)"
echo "E2E serial=$(cat /sys/block/vda/serial)"
umount /mnt`, disk+",id=e2e-disk")
	sum := one(t, r.Console, "E2E sha=")
	if got := one(t, r.Console, "E2E serial="); got != "e2e-disk" {
		t.Errorf("guest sees disk serial %q, want e2e-disk", got)
	}
	// The bytes are in the host file: read the file out of the ext4 image.
	out, err := exec.Command("debugfs", "-R", "cat /data", disk).Output()
	if err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	if h := sha256.Sum256(out); hex.EncodeToString(h[:]) != sum || len(out) != 4<<20 {
		t.Fatalf("host copy of /data: %d bytes, sha %x; guest wrote sha %s", len(out), h, sum)
	}
	// Sparse: 1 GiB file, a few MiB allocated.
	var st struct{ blocks int64 }
	if fi, err := os.Stat(disk); err == nil {
		st.blocks = statBlocks(fi)
	}
	t.Logf("disk file: 1 GiB apparent, %d MiB allocated", st.blocks*512>>20)

	r = boot(`mount -t ext4 /dev/vda /mnt
echo "E2E sha=$(sha256sum /mnt/data | cut -d' ' -f1)"
umount /mnt`, disk)
	if got := one(t, r.Console, "E2E sha="); got != sum {
		t.Fatalf("second boot reads sha %s, want %s", got, sum)
	}

	before := fileSHA256(t, disk)
	r = boot(`mount -t ext4 -o ro /dev/vda /mnt
echo "E2E sha=$(sha256sum /mnt/data | cut -d' ' -f1)"
umount /mnt
echo "E2E ro=$(cat /sys/block/vda/ro)"
if dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync 2>/dev/null; then echo "E2E write=ok"; else echo "E2E write=refused"; fi`, disk+",ro")
	if got := one(t, r.Console, "E2E sha="); got != sum {
		t.Errorf("read-only boot reads sha %s, want %s", got, sum)
	}
	if one(t, r.Console, "E2E ro=") != "1" || one(t, r.Console, "E2E write=") != "refused" {
		t.Errorf("read-only disk: ro=%q write=%q", marks(r.Console, "E2E ro="), marks(r.Console, "E2E write="))
	}
	if after := fileSHA256(t, disk); after != before {
		t.Error("read-only disk changed on the host")
	}
}

// netns creates a network namespace for the test and removes it afterwards.
func netns(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network tests need root")
	}
	name := fmt.Sprintf("boxd-e2e-%d", os.Getpid())
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

func run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// TestNet: the guest pings a peer in the test's network namespace and sends it
// 10 MB over TCP; both ends see the same SHA-256. The namespace has no route
// out: the TAP and the peer are all there is.
func TestNet(t *testing.T) {
	needKVM(t)
	ns := netns(t)
	tool := guestTool(t)
	run(t, "ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap", "vnet_hdr")
	run(t, "ip", "-n", ns, "addr", "add", "10.0.0.1/24", "dev", "tap0")
	run(t, "ip", "-n", ns, "link", "set", "tap0", "up")

	peer := exec.Command("ip", "netns", "exec", ns, tool, "tcp-recv", "10.0.0.1:5000")
	pout, err := peer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	defer peer.Process.Kill()
	psc := bufio.NewScanner(pout)
	if !psc.Scan() || psc.Text() != "listening" {
		t.Fatalf("peer did not start: %q", psc.Text())
	}

	const size = 10 << 20
	rd := filepath.Join(t.TempDir(), "rd.cpio")
	if err := writeInitrd(rd, guestScript(fmt.Sprintf(`ip link set eth0 up
ip addr add 10.0.0.2/24 dev eth0
echo "E2E mac=$(cat /sys/class/net/eth0/address)"
ping -c 3 -W 10 10.0.0.1 >/dev/null && echo "E2E ping=ok"
%s tcp-send 10.0.0.1:5000 %d | sed 's/^/E2E /'`, tool, size)), tool); err != nil {
		t.Fatal(err)
	}
	v := startVMM(t, []string{"ip", "netns", "exec", ns}, "--kernel", guestKernel(t), "--initrd", rd, "--mem-mib", "256",
		"--net", "tap=tap0,mac=02:00:00:e2:e2:01")
	status := v.wait(t, 5*time.Minute)
	console := v.console()
	if status != 0 || one(t, console, "E2E-STATUS") != "0" {
		t.Fatalf("guest failed (monitor status %d)\nconsole:\n%s\nstderr:\n%s", status, console, v.stderr.String())
	}
	if got := one(t, console, "E2E mac="); got != "02:00:00:e2:e2:01" {
		t.Errorf("guest MAC %q", got)
	}
	if one(t, console, "E2E ping=") != "ok" {
		t.Error("ping failed")
	}
	sent := one(t, console, "E2E sha256")
	if !psc.Scan() {
		t.Fatalf("peer printed nothing: %v", psc.Err())
	}
	if want := fmt.Sprintf("sha256 %s %d", sent, size); psc.Text() != want {
		t.Fatalf("peer received %q, guest sent %q", psc.Text(), want)
	}
}

// TestVsock: 8 concurrent streams each way carry 10 MB intact: host to guest
// through the monitor's socket (CONNECT 5000), guest to host to socket_6000.
func TestVsock(t *testing.T) {
	needKVM(t)
	tool := guestTool(t)
	const streams, size = 8, 10 << 20
	sock := filepath.Join(t.TempDir(), "vsock.sock")

	// Guest-initiated streams arrive here.
	ln, err := net.Listen("unix", sock+"_6000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan string, streams)
	go func() {
		for range streams {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				io.Copy(h, c)
				received <- hex.EncodeToString(h.Sum(nil))
			}()
		}
	}()

	rd := filepath.Join(t.TempDir(), "rd.cpio")
	if err := writeInitrd(rd, guestScript(fmt.Sprintf(`%[1]s vsock-serve 5000 %[2]d &
S=$!
%[1]s vsock-send 2 6000 %[2]d %[3]d | sed 's/^/E2E-SENT /'
wait $S`, tool, streams, size)), tool); err != nil {
		t.Fatal(err)
	}
	v := startVMM(t, nil, "--kernel", guestKernel(t), "--initrd", rd, "--mem-mib", "256", "--cpus", "2",
		"--vsock", "cid=3,path="+sock)
	v.waitLine(t, "listening", 3*time.Minute)

	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- hostStream(sock, 5000, size, i)
		}()
	}
	wg.Wait()
	close(errs)
	failed := false
	for err := range errs {
		if err != nil {
			failed = true
			t.Error(err)
		}
	}
	if failed {
		t.Fatalf("host-to-guest streams failed\nconsole:\n%s\n%s\nmonitor stderr:\n%s", v.console(), stallReport(v.cmd.Process.Pid), v.stderr.String())
	}
	status := v.wait(t, 5*time.Minute)
	console := v.console()
	if status != 0 || one(t, console, "E2E-STATUS") != "0" {
		t.Fatalf("guest failed (monitor status %d)\nconsole:\n%s\nstderr:\n%s", status, console, v.stderr.String())
	}
	sent := map[string]bool{}
	for _, m := range marks(console, "E2E-SENT sha256 ") {
		f := strings.Fields(m)
		sent[f[len(f)-1]] = true
	}
	if len(sent) != streams {
		t.Fatalf("guest sent %d streams: %q", len(sent), marks(console, "E2E-SENT"))
	}
	for range streams {
		select {
		case got := <-received:
			if !sent[got] {
				t.Errorf("host received a stream with sha %s the guest never sent", got)
			}
		case <-time.After(time.Minute):
			t.Fatal("guest-to-host stream missing")
		}
	}
}

// hostStream sends size random bytes to the guest's vsock port through the
// monitor's socket and checks the guest's reply ("sha256 HEX BYTES").
func hostStream(sock string, port, size, i int) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	// 10 MB takes seconds; a stream stuck for minutes fails the test (with
	// what the monitor was doing) instead of hanging it.
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	fmt.Fprintf(c, "CONNECT %d\n", port)
	br := bufio.NewReader(c)
	ok, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(ok, "OK ") {
		return fmt.Errorf("stream %d: CONNECT answered %q, %v", i, ok, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(c, h), rand.Reader, int64(size)); err != nil {
		return fmt.Errorf("stream %d: send: %w", i, err)
	}
	c.(*net.UnixConn).CloseWrite()
	reply, err := br.ReadString('\n')
	if want := fmt.Sprintf("sha256 %x %d\n", h.Sum(nil), size); reply != want {
		return fmt.Errorf("stream %d: guest answered %q (%v), want %q", i, reply, err, want)
	}
	return nil
}
