package nested

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh here")
	}
	for _, s := range []string{"", "plain", "it's", "'", "$HOME `id` \"q\" \\", "new\nline", "*?[a]", "-n"} {
		out, err := exec.Command(sh, "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil {
			t.Fatalf("sh with %q: %v", s, err)
		}
		if string(out) != s {
			t.Errorf("sh saw %q; want %q", out, s)
		}
	}
}

// TestRunScript runs run.sh with the host's sh, as L1's chroot does.
func TestRunScript(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh here")
	}
	if _, err := exec.LookPath("env"); err != nil {
		t.Skip("no env here")
	}
	dir := t.TempDir()
	work := filepath.Join(dir, "work dir")
	mustMkdir(t, work)
	spec := runSpec{
		cmd: []string{"sh", "-c", `printf '%s|%s|%s|%s|' "$PWD" "$A" "$B" "$#"; cat; exit 7`, "arg0", "it's", "x y"},
		dir: work,
		env: []string{"PATH=" + os.Getenv("PATH"), "A=quote ' and $dollar", "B=multi\nline"},
	}
	if err := spec.validate(); err != nil {
		t.Fatal(err)
	}
	if err := spec.write(dir); err != nil {
		t.Fatal(err)
	}
	// L1 feeds run.sh to sh on stdin; the command must not inherit it.
	script, err := os.Open(filepath.Join(dir, "run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	defer script.Close()
	cmd := exec.Command("sh", "-s")
	cmd.Stdin = script
	cmd.Env = []string{"LEAK=1"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("run.sh: %v; want exit status 7; output %q", err, out.String())
	}
	// cat printed nothing: stdin was /dev/null, not the rest of run.sh.
	want := work + "|quote ' and $dollar|multi\nline|2|"
	if got := out.String(); got != want {
		t.Errorf("run.sh printed %q; want %q", got, want)
	}

	spec.dir = filepath.Join(dir, "missing")
	if err := spec.write(dir); err != nil {
		t.Fatal(err)
	}
	err = exec.Command("sh", filepath.Join(dir, "run.sh")).Run()
	if !errors.As(err, &ee) || ee.ExitCode() != 125 {
		t.Errorf("run.sh in a missing directory: %v; want exit status 125", err)
	}
}

func TestMounts(t *testing.T) {
	spec := runSpec{overlays: []string{"/root/deep/home", "/tmp", "/var/tmp"}, outDir: "/tmp/out"}
	want := "overlay /tmp\noverlay /var/tmp\nout /tmp/out\noverlay /root/deep/home\n"
	if got := string(spec.mounts()); got != want {
		t.Errorf("mounts:\n%s\nwant:\n%s", got, want)
	}
	spec = runSpec{overlays: []string{"/tmp"}}
	if got := string(spec.mounts()); got != "overlay /tmp\n" {
		t.Errorf("mounts without out: %q", got)
	}
}

func TestL1Env(t *testing.T) {
	in := []string{"PATH=/usr/bin", "TMPDIR=/elsewhere", "HOME=/root", "BOXD_NESTED=0", "TMPDIR=/again"}
	want := []string{"PATH=/usr/bin", "HOME=/root", "BOXD_NESTED=1", "BOXD_NESTED_OUT=/out", "TMPDIR=/tmp"}
	if diff := cmp.Diff(want, l1Env(in, "/out")); diff != "" {
		t.Errorf("l1Env (-want +got):\n%s", diff)
	}
	want = []string{"PATH=/usr/bin", "HOME=/root", "BOXD_NESTED=1", "TMPDIR=/tmp"}
	if diff := cmp.Diff(want, l1Env(in, "")); diff != "" {
		t.Errorf("l1Env without out (-want +got):\n%s", diff)
	}
}

func TestWritableDirs(t *testing.T) {
	home := t.TempDir()
	tests := []struct {
		name string
		home string
		want []string
	}{
		{"home", home, []string{home}},
		{"home is /", "/", nil},
		{"home missing", filepath.Join(home, "missing"), nil},
		{"home relative", "relative", nil},
		{"home with colon", filepath.Join(home, "a:b"), nil},
		{"home is /tmp", "/tmp", nil},
	}
	mustMkdir(t, filepath.Join(home, "a:b"))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := writableDirs([]string{"HOME=" + tc.home})
			var std []string
			for _, d := range []string{"/tmp", "/var/tmp"} {
				if st, err := os.Stat(d); err == nil && st.IsDir() {
					std = append(std, d)
				}
			}
			if diff := cmp.Diff(append(std, tc.want...), got); diff != "" {
				t.Errorf("writableDirs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := runSpec{cmd: []string{"true"}, dir: "/", env: []string{"A=1", "B="}, outDir: "/out"}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	tests := map[string]func(s *runSpec){
		"no command":          func(s *runSpec) { s.cmd = nil },
		"empty command":       func(s *runSpec) { s.cmd = []string{""} },
		"command with =":      func(s *runSpec) { s.cmd = []string{"A=1"} },
		"relative dir":        func(s *runSpec) { s.dir = "rel" },
		"unclean dir":         func(s *runSpec) { s.dir = "/a/../b" },
		"dir with newline":    func(s *runSpec) { s.dir = "/a\nb" },
		"out with blank end":  func(s *runSpec) { s.outDir = "/out " },
		"out is root":         func(s *runSpec) { s.outDir = "/" },
		"env without =":       func(s *runSpec) { s.env = []string{"A"} },
		"env with empty name": func(s *runSpec) { s.env = []string{"=x"} },
	}
	for name, breakIt := range tests {
		s := ok
		s.cmd = append([]string(nil), ok.cmd...)
		breakIt(&s)
		if err := s.validate(); err == nil {
			t.Errorf("%s: validate succeeded; want an error", name)
		}
	}
}
