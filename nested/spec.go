package nested

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// runSpec is what L1's init reads from the per-run directory the host shares
// with it: which directories to make writable (mounts) and how to start the
// command (run.sh). The same directory carries the results back (follow.go).
type runSpec struct {
	cmd      []string
	dir      string   // working directory, absolute
	env      []string // the command's whole environment
	overlays []string // absolute directories to make writable in L1 memory
	outDir   string   // absolute; "" for no output share
}

// fixedPath is the PATH run.sh uses to find env(1); the command itself is
// looked up in its own environment's PATH.
const fixedPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// l1Env returns env with the variables the harness sets in L1 replaced.
func l1Env(env []string, outDir string) []string {
	set := map[string]string{EnvInside: "1", "TMPDIR": "/tmp"}
	if outDir != "" {
		set[EnvOut] = outDir
	}
	return overrideEnv(env, set)
}

// overrideEnv drops every entry of env named in set and appends set's entries
// in sorted order.
func overrideEnv(env []string, set map[string]string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+set[k])
	}
	return out
}

// envValue returns the value of key in env ("" if unset); the last one wins,
// as in exec.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// writableDirs returns the directories to overlay in L1: /tmp, /var/tmp and
// $HOME, those that exist on the host as directories and can be named in
// overlay's mount options.
func writableDirs(env []string) []string {
	var dirs []string
	seen := map[string]bool{}
	for _, d := range []string{"/tmp", "/var/tmp", envValue(env, "HOME")} {
		if d == "" || !filepath.IsAbs(d) {
			continue
		}
		d = filepath.Clean(d)
		if d == "/" || seen[d] || checkPath(d, true) != nil {
			continue
		}
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			continue
		}
		seen[d] = true
		dirs = append(dirs, d)
	}
	return dirs
}

// checkPath rejects paths that the init script or mount options cannot carry:
// relative or unclean ones, control characters, leading or trailing blanks
// (read(1) trims them) and, for overlay options, ',', ':' and '\'.
func checkPath(p string, overlay bool) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("path %q is not absolute and clean", p)
	}
	if strings.TrimSpace(p) != p {
		return fmt.Errorf("path %q has leading or trailing blanks", p)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("path %q has a control character", p)
		}
	}
	if overlay && strings.ContainsAny(p, ",:\\") {
		return fmt.Errorf("path %q has a character overlayfs options cannot carry", p)
	}
	return nil
}

func (s runSpec) validate() error {
	if len(s.cmd) == 0 || s.cmd[0] == "" {
		return errors.New("no command")
	}
	// run.sh starts the command with env(1), which would take a first word
	// containing '=' for one more variable.
	if strings.Contains(s.cmd[0], "=") {
		return fmt.Errorf("command name %q contains '='", s.cmd[0])
	}
	if err := checkPath(s.dir, false); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	if s.outDir != "" {
		if err := checkPath(s.outDir, false); err != nil {
			return fmt.Errorf("output directory: %w", err)
		}
		if s.outDir == "/" {
			return errors.New("output directory cannot be /")
		}
	}
	for _, kv := range s.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("environment entry %q is not KEY=VALUE", kv)
		}
	}
	return nil
}

// mounts is the DIR/mounts file: "overlay DIR" and "out DIR" lines, parents
// before children so that no mount hides another.
func (s runSpec) mounts() []byte {
	type mount struct{ kind, dir string }
	var ms []mount
	for _, d := range s.overlays {
		ms = append(ms, mount{"overlay", d})
	}
	if s.outDir != "" {
		ms = append(ms, mount{"out", s.outDir})
	}
	sort.SliceStable(ms, func(i, j int) bool { return depth(ms[i].dir) < depth(ms[j].dir) })
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s %s\n", m.kind, m.dir)
	}
	return []byte(b.String())
}

func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }

// script is DIR/run.sh, which the chroot's /bin/sh reads from its stdin.
// Exit status 125 means the working directory was not there.
func (s runSpec) script() []byte {
	var b strings.Builder
	b.WriteString("# written by boxd nested for one run\n")
	b.WriteString("PATH=" + fixedPath + "\n")
	fmt.Fprintf(&b, "cd %s || { echo 'boxd nested: cannot enter the working directory in L1' >&2; exit 125; }\n", shellQuote(s.dir))
	b.WriteString("exec </dev/null env -i")
	for _, kv := range s.env {
		b.WriteString(" \\\n\t" + shellQuote(kv))
	}
	for _, a := range s.cmd {
		b.WriteString(" \\\n\t" + shellQuote(a))
	}
	b.WriteString("\n")
	return []byte(b.String())
}

// shellQuote quotes s as one POSIX shell word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// write creates dir/mounts, dir/run.sh and the empty output files that L1
// appends to, so that the host can open them before L1 starts.
func (s runSpec) write(dir string) error {
	for name, content := range map[string][]byte{
		"mounts":   s.mounts(),
		"run.sh":   s.script(),
		fileStdout: nil,
		fileStderr: nil,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			return fmt.Errorf("run spec: %w", err)
		}
	}
	return nil
}
