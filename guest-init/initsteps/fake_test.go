package initsteps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// fakeSys records privileged calls, with paths relative to root, and fails
// those whose record starts with a prefix in fail.
type fakeSys struct {
	root  string
	links map[string]bool
	fail  map[string]error

	mu    sync.Mutex
	calls []string
}

func newFakeSys(t *testing.T) *fakeSys {
	return &fakeSys{root: t.TempDir(), links: map[string]bool{"lo": true, "eth0": true}, fail: map[string]error{}}
}

func (f *fakeSys) rel(p string) string {
	if r, err := filepath.Rel(f.root, p); err == nil && !strings.HasPrefix(r, "..") {
		return "/" + strings.TrimPrefix(filepath.ToSlash(r), ".")
	}
	return p
}

func (f *fakeSys) record(format string, args ...any) error {
	c := fmt.Sprintf(format, args...)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	for prefix, err := range f.fail {
		if strings.HasPrefix(c, prefix) {
			return err
		}
	}
	return nil
}

func (f *fakeSys) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeSys) Mount(source, target, fstype string, flags uintptr, data string) error {
	return f.record("mount %s %s %s %q", f.rel(source), f.rel(target), fstype, data)
}
func (f *fakeSys) Unmount(target string, flags int) error {
	return f.record("umount %s", f.rel(target))
}
func (f *fakeSys) MoveMount(source, target string) error {
	return f.record("move %s %s", f.rel(source), f.rel(target))
}
func (f *fakeSys) IsMountPoint(p string) (bool, error) { return true, nil }
func (f *fakeSys) Chdir(dir string) error              { return f.record("chdir %s", f.rel(dir)) }
func (f *fakeSys) Chroot(dir string) error             { return f.record("chroot %s", dir) }
func (f *fakeSys) Exec(p string, argv, env []string) error {
	return f.record("exec %s", strings.Join(argv, " "))
}
func (f *fakeSys) WriteMMIO(addr uint64, v uint32) error { return f.record("mmio %#x=%d", addr, v) }
func (f *fakeSys) AddEntropy(seed []byte) error          { return f.record("entropy %x", seed) }
func (f *fakeSys) SetClock(t time.Time) error            { return f.record("clock %d", t.UnixNano()) }
func (f *fakeSys) LinkUp(name string) error              { return f.record("link-up %s", name) }
func (f *fakeSys) HasLink(name string) bool              { return f.links[name] }
func (f *fakeSys) SetNetwork(c wire.NetworkConfig) error {
	return f.record("network if=%s addr=%s gw=%s dns=%s host=%s", c.Interface, c.Address, c.Gateway, strings.Join(c.DNS, ","), c.Hostname)
}
func (f *fakeSys) Sync()                       { f.record("sync") }
func (f *fakeSys) Kill(pid int, sig int) error { return f.record("kill %d %d", pid, sig) }
func (f *fakeSys) Reboot(cmd int) error        { return f.record("reboot %#x", cmd) }

var errInjected = errors.New("injected")

// testEnv returns an Env over a fake guest root holding an initramfs layout
// and a /proc/cmdline with the given content.
func testEnv(t *testing.T, cmdline string) (*Env, *fakeSys, *[]string) {
	t.Helper()
	sys := newFakeSys(t)
	for name, body := range map[string]string{
		"bin/init": "init", "bin/boxd": "boxd", "bin/busybox": "busybox", "dev/vda": "",
		"proc/cmdline": cmdline + "\n",
	} {
		p := filepath.Join(sys.root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var log []string
	var mu sync.Mutex
	env := &Env{
		Root: sys.root,
		Sys:  sys,
		Logf: func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			log = append(log, fmt.Sprintf(format, args...))
		},
		Environ:           Environ,
		DeviceWait:        10 * time.Millisecond,
		AgentReadyTimeout: time.Second,
	}
	return env, sys, &log
}
