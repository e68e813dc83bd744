package switchroot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func testSpec() Spec {
	return Spec{
		Device:  "/dev/vda",
		FSType:  "ext4",
		NewRoot: "/newroot",
		Wait:    time.Second,
		Move:    []string{"/dev", "/proc", "/sys", "/run", "/tmp"},
		Bin:     "/bin",
		Init:    "init",
		Args:    []string{"--switched"},
	}
}

func TestPlan(t *testing.T) {
	ops, err := Plan(testSpec())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range ops {
		got = append(got, op.String())
	}
	want := []string{
		"wait-device /dev/vda",
		"mkdir /newroot 0755",
		"mount-disk /dev/vda /newroot",
		"mkdir /newroot/dev 0755",
		"mkdir /newroot/proc 0755",
		"mkdir /newroot/sys 0755",
		"mkdir /newroot/run 0755",
		"mkdir /newroot/tmp 01777",
		"move /dev /newroot/dev",
		"move /proc /newroot/proc",
		"move /sys /newroot/sys",
		"move /run /newroot/run",
		"move /tmp /newroot/tmp",
		"mkdir /newroot/run/boxd/bin 0755",
		"bind /bin /newroot/run/boxd/bin",
		"move-root /newroot",
		"delete-old /",
		"exec /run/boxd/bin/init /run/boxd/bin/init --switched",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
}

func TestPlanRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"relative device", func(s *Spec) { s.Device = "vda" }, "device"},
		{"no fstype", func(s *Spec) { s.FSType = "" }, "filesystem"},
		{"root as new root", func(s *Spec) { s.NewRoot = "/" }, "new root"},
		{"no init", func(s *Spec) { s.Init = "" }, "not a file name"},
		{"init path", func(s *Spec) { s.Init = "sbin/init" }, "not a file name"},
		{"relative bin", func(s *Spec) { s.Bin = "bin" }, "bin directory"},
		{"bin in new root", func(s *Spec) { s.Bin = "/newroot/bin" }, "overlaps"},
		{"run not moved", func(s *Spec) { s.Move = []string{"/dev", "/proc"} }, "/run must"},
		{"move overlaps", func(s *Spec) { s.Move = append(s.Move, "/newroot/x") }, "overlaps"},
		{"unclean mount", func(s *Spec) { s.Move = append(s.Move, "/dev/../etc") }, "clean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testSpec()
			tt.edit(&s)
			if _, err := Plan(s); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Plan: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// fakeSys records calls with paths relative to root, and fails the call
// whose record starts with failOn.
type fakeSys struct {
	root   string
	mounts map[string]bool // guest paths that are mount points
	calls  []string
	failOn string
}

func (f *fakeSys) rel(p string) string {
	if r, err := filepath.Rel(f.root, p); err == nil && !strings.HasPrefix(r, "..") {
		return "/" + strings.TrimPrefix(filepath.ToSlash(r), ".")
	}
	return p
}

func (f *fakeSys) record(format string, args ...any) error {
	c := fmt.Sprintf(format, args...)
	f.calls = append(f.calls, c)
	if f.failOn != "" && strings.HasPrefix(c, f.failOn) {
		return errors.New("injected failure")
	}
	return nil
}

func (f *fakeSys) Mount(source, target, fstype string, flags uintptr, data string) error {
	if flags != 0 {
		return f.record("mount %s %s %s %#x", f.rel(source), f.rel(target), fstype, flags)
	}
	return f.record("mount %s %s %s", source, f.rel(target), fstype)
}
func (f *fakeSys) Unmount(target string, flags int) error {
	return f.record("umount %s", f.rel(target))
}
func (f *fakeSys) MoveMount(source, target string) error {
	return f.record("move %s %s", f.rel(source), f.rel(target))
}
func (f *fakeSys) IsMountPoint(p string) (bool, error) { return f.mounts[f.rel(p)], nil }
func (f *fakeSys) Chdir(dir string) error              { return f.record("chdir %s", f.rel(dir)) }
func (f *fakeSys) Chroot(dir string) error             { return f.record("chroot %s", dir) }
func (f *fakeSys) Exec(p string, argv, env []string) error {
	return f.record("exec %s %q %q", p, argv, env)
}

// initramfs lays out a fake initramfs root in a temporary directory.
func initramfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range map[string]string{
		"bin/init": "init-binary", "bin/boxd": "boxd-binary", "bin/busybox": "busybox-binary",
		"dev/vda": "", "etc/passwd": "root:x:0:0::/root:/bin/sh\n",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"proc", "sys", "run", "tmp"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("busybox", filepath.Join(root, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin/init", filepath.Join(root, "init")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestExecute(t *testing.T) {
	root := initramfs(t)
	sys := &fakeSys{root: root, mounts: map[string]bool{"/dev": true, "/proc": true, "/sys": true, "/run": true}}
	s := testSpec()
	ops, err := Plan(s)
	if err != nil {
		t.Fatal(err)
	}
	var log []string
	err = Execute(root, s, ops, sys, []string{"PATH=/bin"}, func(f string, a ...any) { log = append(log, fmt.Sprintf(f, a...)) })
	if !errors.Is(err, ErrHalfSwitched) || !strings.Contains(err.Error(), "plan ended without exec") {
		t.Fatalf("Execute: %v; the fake exec returns, so want the plan-ended error", err)
	}
	want := []string{
		"mount /dev/vda /newroot ext4",
		"move /dev /newroot/dev",
		"move /proc /newroot/proc",
		"move /sys /newroot/sys",
		"move /run /newroot/run", // /tmp is not a mount point here: left behind
		"mount /bin /newroot/run/boxd/bin  0x1000",
		"mount  /newroot/run/boxd/bin  0x1021",
		"chdir /newroot",
		"move . /",
		"chroot .",
		"chdir /",
		`exec /run/boxd/bin/init ["/run/boxd/bin/init" "--switched"] ["PATH=/bin"]`,
	}
	if diff := cmp.Diff(want, sys.calls); diff != "" {
		t.Errorf("syscalls (-want +got):\n%s", diff)
	}
	// Mount points the disk lacked were created with their modes.
	if fi, err := os.Stat(filepath.Join(root, "newroot/tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("newroot/tmp: %v %v, want sticky", fi.Mode(), err)
	}
	// The old root was emptied, except the new root and the bound /bin,
	// whose files are intact.
	var left []string
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if diff := cmp.Diff([]string{"bin", "newroot"}, left); diff != "" {
		t.Errorf("old root (-want +got):\n%s", diff)
	}
	for name, body := range map[string]string{"init": "init-binary", "boxd": "boxd-binary", "busybox": "busybox-binary"} {
		if b, err := os.ReadFile(filepath.Join(root, "bin", name)); err != nil || string(b) != body {
			t.Errorf("bin/%s: %q, %v; want %q", name, b, err, body)
		}
	}
	if !strings.Contains(strings.Join(log, "\n"), "/tmp is not a mount point") {
		t.Errorf("log does not mention the skipped /tmp:\n%s", strings.Join(log, "\n"))
	}
}

func TestExecuteRollsBack(t *testing.T) {
	tests := []struct {
		failOn string
		want   []string // calls after the failing one
		err    error
	}{
		{failOn: "mount /dev/vda", want: []string{"chdir /"}, err: ErrNotSwitched},
		{failOn: "move /sys", want: []string{"chdir /", "move /newroot/proc /proc", "move /newroot/dev /dev", "umount /newroot"}, err: ErrNotSwitched},
		{failOn: "move . /", want: []string{"chdir /", "umount /newroot/run/boxd/bin", "move /newroot/run /run", "move /newroot/sys /sys", "move /newroot/proc /proc", "move /newroot/dev /dev", "umount /newroot"}, err: ErrNotSwitched},
		{failOn: "mount  /newroot/run/boxd/bin", want: []string{"chdir /", "umount /newroot/run/boxd/bin", "move /newroot/run /run", "move /newroot/sys /sys", "move /newroot/proc /proc", "move /newroot/dev /dev", "umount /newroot"}, err: ErrNotSwitched},
		{failOn: "chroot", want: nil, err: ErrHalfSwitched},
	}
	for _, tt := range tests {
		t.Run(tt.failOn, func(t *testing.T) {
			root := initramfs(t)
			sys := &fakeSys{root: root, failOn: tt.failOn, mounts: map[string]bool{"/dev": true, "/proc": true, "/sys": true, "/run": true}}
			s := testSpec()
			ops, _ := Plan(s)
			err := Execute(root, s, ops, sys, nil, func(string, ...any) {})
			if !errors.Is(err, tt.err) {
				t.Fatalf("Execute: %v, want %v", err, tt.err)
			}
			i := 0
			for i < len(sys.calls) && !strings.HasPrefix(sys.calls[i], tt.failOn) {
				i++
			}
			if diff := cmp.Diff(tt.want, sys.calls[i+1:], cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("calls after the failure (-want +got):\n%s", diff)
			}
			if tt.err == ErrNotSwitched {
				if _, err := os.Stat(filepath.Join(root, "init")); err != nil {
					t.Errorf("initramfs damaged by a failed switch: %v", err)
				}
			}
		})
	}
}

func TestExecuteMissingDevice(t *testing.T) {
	root := initramfs(t)
	sys := &fakeSys{root: root}
	s := testSpec()
	s.Device, s.Wait = "/dev/vdz", 20*time.Millisecond
	ops, _ := Plan(s)
	err := Execute(root, s, ops, sys, nil, func(string, ...any) {})
	if !errors.Is(err, ErrNotSwitched) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Execute: %v, want not-switched wrapping not-exist", err)
	}
	if len(sys.calls) != 1 || sys.calls[0] != "chdir /" {
		t.Errorf("calls %q, want only the rollback's chdir", sys.calls)
	}
}

func TestDeleteTreeDoesNotFollowSymlinks(t *testing.T) {
	// A symlink to a directory elsewhere is removed, never followed. (That it
	// stops at mount points needs real mounts; the guest e2e test covers it.)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	if err := os.WriteFile(keep, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "a/link")); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n, err := deleteTree(d, nil, t.Logf)
	if err != nil || n != 3 {
		t.Errorf("deleteTree = %d, %v; want 3 entries (a, a/b, a/link)", n, err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("followed a symlink out of the tree: %v", err)
	}
}
