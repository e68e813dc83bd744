package fakevmm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/boxd-dev/boxd/agent/wire"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// Env is the environment variable test binaries check to become the fake.
const Env = "BOXD_FAKE_VMM"

// Run makes the current process the fake monitor if Env is set and args
// (os.Args[1:]) start with "vmm"; it never returns then. Call it first in
// TestMain.
func Run() {
	if os.Getenv(Env) == "" || len(os.Args) < 2 || os.Args[1] != "vmm" {
		return
	}
	os.Exit(Main(os.Args[2:], os.Stderr))
}

type flags struct {
	kernel, initrd, cmdline, console, memDir, result string
	layerDir                                         string
	cpus, memMiB                                     int
	disks                                            []string
	net, vsock                                       string
	timing                                           bool
	control, restore                                 string
}

// Main runs the fake monitor with the flags of "boxd vmm" and returns its
// exit status.
func Main(args []string, stderr io.Writer) int {
	var f flags
	fs := pflag.NewFlagSet("vmm", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.kernel, "kernel", "", "")
	fs.StringVar(&f.initrd, "initrd", "", "")
	fs.StringVar(&f.cmdline, "cmdline", "", "")
	fs.StringVar(&f.console, "console", "-", "")
	fs.StringVar(&f.memDir, "mem-dir", "", "")
	fs.StringVar(&f.layerDir, "layer-dir", "", "")
	fs.StringVar(&f.result, "result-json", "", "")
	fs.IntVar(&f.cpus, "cpus", 1, "")
	fs.IntVar(&f.memMiB, "mem-mib", 256, "")
	fs.StringArrayVar(&f.disks, "disk", nil, "")
	fs.StringVar(&f.net, "net", "", "")
	fs.StringVar(&f.vsock, "vsock", "", "")
	fs.BoolVar(&f.timing, "timing", false, "")
	fs.StringVar(&f.control, "control", "", "")
	fs.StringVar(&f.restore, "restore", "", "")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if err := run(f, stderr); err != nil {
		var ex exitStatus
		if errors.As(err, &ex) {
			return int(ex)
		}
		fmt.Fprintln(stderr, "fake vmm:", err)
		return 1
	}
	return 0
}

type exitStatus int

func (e exitStatus) Error() string { return "exit " + strconv.Itoa(int(e)) }

func run(f flags, stderr io.Writer) error {
	// Before anything a test could see (the vsock socket), so that no
	// signal sent once the agent answers is lost: Go ignores an
	// un-notified SIGUSR1.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	var snap *snapshot
	switch {
	case f.restore != "" && f.kernel != "":
		return errors.New("--restore and --kernel exclude each other")
	case f.restore != "":
		s, err := readSnapshot(f.restore)
		if err != nil {
			return err
		}
		snap = &s
	default:
		if _, err := os.Stat(f.kernel); err != nil {
			return fmt.Errorf("kernel: %w", err)
		}
	}
	for _, d := range []struct{ flag, dir string }{{"--mem-dir", f.memDir}, {"--layer-dir", f.layerDir}} {
		if d.dir == "" {
			continue
		}
		if fi, err := os.Stat(d.dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("%s %s: not a directory (%v)", d.flag, d.dir, err)
		}
	}
	if snap != nil && f.layerDir != "" {
		// As the monitor links the memory it restores into its layer
		// folder (and removes the link when it ends), so the snapshot can
		// be deleted while it runs.
		link := filepath.Join(f.layerDir, "layer-"+strconv.Itoa(os.Getpid()))
		if err := os.Link(filepath.Join(f.restore, SnapshotFile), link); err != nil {
			return fmt.Errorf("keep layer: %w", err)
		}
		defer os.Remove(link)
	}
	for _, d := range f.disks {
		path, _, _ := strings.Cut(d, ",")
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("disk: %w", err)
		}
	}
	if f.net != "" && (!strings.HasPrefix(f.net, "tap=") || !strings.Contains(f.net, ",mac=")) {
		return fmt.Errorf("--net %q: want tap=NAME,mac=MAC", f.net)
	}
	console, err := os.OpenFile(f.console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer console.Close()
	if snap != nil {
		fmt.Fprintf(console, "fake-vmm: restore %s disks=%d net=%q\n", f.restore, len(f.disks), f.net)
	} else {
		fmt.Fprintf(console, "fake-vmm: boot cpus=%d mem=%d disks=%d net=%q cmdline=%q\n", f.cpus, f.memMiB, len(f.disks), f.net, f.cmdline)
	}

	finish := func(result string, status int) error {
		fmt.Fprintf(console, "fake-vmm: %s\n", result)
		fmt.Fprintf(stderr, "boxd vmm: %s: fake\n", result)
		if f.result != "" {
			b, _ := json.Marshal(map[string]any{"result": result, "detail": "fake monitor", "exit_status": status, "boot_marks": []any{}})
			if err := os.WriteFile(f.result, append(b, '\n'), 0o644); err != nil {
				return err
			}
		}
		if status != 0 {
			return exitStatus(status)
		}
		return nil
	}
	for _, a := range strings.Fields(f.cmdline) {
		if v, ok := strings.CutPrefix(a, "fake.exit="); ok {
			n, _ := strconv.Atoi(v)
			return finish("fake-exit", n)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g *guest
	noAgent := strings.Contains(" "+f.cmdline+" ", " fake.noagent ") ||
		snap != nil && strings.Contains(","+snap.Guest.Fail+",", ",noagent,")
	if f.vsock != "" && !noAgent {
		path, err := vsockPath(f.vsock)
		if err != nil {
			return err
		}
		if snap != nil {
			g = newGuest(filepath.Dir(path), snap.Guest)
		} else {
			g = bootGuest(filepath.Dir(path), f.cmdline)
		}
		if err := g.save(); err != nil {
			return err
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return fmt.Errorf("vsock: %w", err)
		}
		defer ln.Close()
		opts := server.Options{Kmsg: "-", System: g, ProcNet: "/proc/net"}
		go server.Serve(ctx, &hybridListener{Listener: ln}, opts)
	}
	suspended := make(chan struct{})
	if f.control != "" {
		var fail string
		for _, a := range strings.Fields(f.cmdline) {
			if v, ok := strings.CutPrefix(a, "fake.control="); ok {
				fail = v
			}
		}
		srv, err := serveControl(f.control, g, suspended, fail)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	fmt.Fprintf(console, "fake-vmm: agent ready\n")

	select {
	case <-suspended:
		return finish("suspended", 5)
	case sig := <-sigs:
		switch sig {
		case syscall.SIGUSR1:
			return finish("reboot", 3)
		case syscall.SIGUSR2:
			return finish("crash", 4)
		default:
			return finish("host-stop", 0)
		}
	}
}

func vsockPath(v string) (string, error) {
	var path string
	var cid bool
	for kv := range strings.SplitSeq(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "cid":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil || n < 3 {
				return "", fmt.Errorf("--vsock %q: bad cid", v)
			}
			cid = true
		case "path":
			path = val
		default:
			return "", fmt.Errorf("--vsock %q: unknown key %q", v, k)
		}
	}
	if !cid || path == "" {
		return "", fmt.Errorf("--vsock %q: want cid=N,path=SOCK", v)
	}
	return path, nil
}

// hybridListener answers the Firecracker hybrid-vsock handshake on each
// connection ("CONNECT 1024\n" → "OK <port>\n") before the agent sees it.
type hybridListener struct{ net.Listener }

func (l *hybridListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := handshake(c); err != nil {
			c.Close()
			continue
		}
		return c, nil
	}
}

func handshake(c net.Conn) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	// Byte by byte, so no bytes after the line are consumed.
	r := bufio.NewReaderSize(oneByte{c}, 16)
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	port, ok := strings.CutPrefix(strings.TrimSpace(line), "CONNECT ")
	if !ok || port != strconv.Itoa(wire.VsockPort) {
		fmt.Fprintf(c, "ERR no listener on %q\n", port)
		return fmt.Errorf("connect to %q", port)
	}
	_, err = fmt.Fprintf(c, "OK 1073741824\n")
	return err
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }
