package initsteps

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestUnmountOrder(t *testing.T) {
	b, err := os.ReadFile("testdata/mounts")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/var/lib/docker/overlay2/abc/merged", "/mnt/my disk", "/data", "/"}
	if diff := cmp.Diff(want, unmountOrder(b)); diff != "" {
		t.Errorf("unmount order (-want +got):\n%s", diff)
	}
}

func TestStatFlags(t *testing.T) {
	tests := []struct {
		stat  string
		flags uint64
		ok    bool
	}{
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0", 2129984, true},
		{"77 (a) b) (c) R 1 77 77 34816 77 4194560 12", 4194560, true},
		{"5 (x) S 1", 0, false},
		{"garbage", 0, false},
	}
	for _, tt := range tests {
		f, ok := statFlags([]byte(tt.stat))
		if f != tt.flags || ok != tt.ok {
			t.Errorf("statFlags(%q) = %d, %v; want %d, %v", tt.stat, f, ok, tt.flags, tt.ok)
		}
	}
}

// fakeProc writes a /proc with the given pid → stat lines.
func fakeProc(t *testing.T, procs map[string]string) string {
	dir := t.TempDir()
	for pid, stat := range procs {
		if err := os.MkdirAll(filepath.Join(dir, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pid, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUserProcesses(t *testing.T) {
	dir := fakeProc(t, map[string]string{
		"1":   "1 (init) S 0 1 1 0 -1 4194560 0",
		"2":   "2 (kthreadd) S 0 0 0 0 -1 2129984 0", // PF_KTHREAD
		"300": "300 (sh) S 1 300 300 0 -1 4194560 0",
		"301": "301 (zombie) Z 1 300 300 0 -1 4227148 0",
	})
	if err := os.MkdirAll(filepath.Join(dir, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := userProcesses(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{300, 301}, got); diff != "" {
		t.Errorf("user processes (-want +got):\n%s", diff)
	}
}

func TestShutdown(t *testing.T) {
	for _, a := range []Action{Poweroff, Reboot} {
		t.Run(a.String(), func(t *testing.T) {
			sys := newFakeSys(t)
			// No user processes left: the waits end at once.
			proc := filepath.Join(sys.root, "proc")
			if err := os.MkdirAll(filepath.Join(proc, "self"), 0o755); err != nil {
				t.Fatal(err)
			}
			mounts, err := os.ReadFile("testdata/mounts")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(proc, "self/mounts"), mounts, 0o644); err != nil {
				t.Fatal(err)
			}
			sys.fail["umount /data"] = syscall.EBUSY
			var log []string
			err = Shutdown(sys, a, ShutdownConfig{Root: sys.root, Logf: func(f string, args ...any) { log = append(log, f) }})
			if err != nil {
				t.Fatal(err)
			}
			value, cmd := 1, unix.LINUX_REBOOT_CMD_POWER_OFF
			if a == Reboot {
				value, cmd = 2, unix.LINUX_REBOOT_CMD_RESTART
			}
			want := []string{
				"sync",
				"kill -1 15",
				"sync",
				"umount /var/lib/docker/overlay2/abc/merged",
				"umount /mnt/my disk",
				"umount /data",
				`mount  /data  ""`, // busy: remounted read-only instead
				`mount  /  ""`,
				"sync",
				fmt.Sprintf("mmio 0xc0001000=%d", value),
				fmt.Sprintf("reboot %#x", cmd),
			}
			if diff := cmp.Diff(want, sys.Calls()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStoreMMIO maps a sparse file at the boot timer's offset, as init maps
// /dev/mem, and checks the 4 bytes written there.
func TestStoreMMIO(t *testing.T) {
	const addr = 0xc000_0000
	p := filepath.Join(t.TempDir(), "mem")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(addr + 4096); err != nil {
		t.Skipf("sparse file of 3 GiB: %v", err)
	}
	if err := storeMMIO(p, addr+8, 0x01020304); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	if _, err := f.ReadAt(got, addr); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 16)
	binary.LittleEndian.PutUint32(want[8:], 0x01020304)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("page (-want +got):\n%s", diff)
	}
	if err := storeMMIO(p, addr+2, 1); err == nil {
		t.Error("unaligned store accepted")
	}
	if err := storeMMIO(filepath.Join(t.TempDir(), "nope"), addr, 1); err == nil {
		t.Error("missing device accepted")
	}
}
