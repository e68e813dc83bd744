package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/internal/golden"
)

func TestCLISuspendResumeFork(t *testing.T) {
	d := startDaemon(t)
	d.ok("new", "--name", "p", "--mem", "64M", "--disk", "1G")

	golden.Check(t, "suspend.json", indent(t, d.ok("suspend", "p", "--json")))
	code, _, errs := d.run("", "exec", "p", "true")
	if code == 0 || !strings.Contains(errs, "suspended: boxd resume p") {
		t.Errorf("exec on a suspended VM: exit %d, stderr %q", code, errs)
	}
	golden.Check(t, "resume.json", indent(t, d.ok("resume", "p", "--json")))

	out := d.ok("fork", "p", "--name", "c", "--count", "2", "--json")
	golden.Check(t, "fork.json", indent(t, out))
	var res api.ForkResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.VMs) != 2 || res.VMs[0].Timing == nil || res.Timing.ParentPausedMs <= 0 {
		t.Errorf("fork --json: %+v", res)
	}
	// Text: a table of the copies on stdout, the timing summary on stderr.
	code, txt, errs := d.run("", "fork", "c-1", "--name", "cc")
	if code != 0 || !strings.Contains(txt, "cc ") || !strings.Contains(errs, "source paused") {
		t.Errorf("fork (text): exit %d\nstdout: %s\nstderr: %s", code, txt, errs)
	}

	d.ok("suspend", "p", "--to-disk")
	var vm api.VM
	if err := json.Unmarshal([]byte(d.ok("new", "--from", "p", "--name", "w", "--json")), &vm); err != nil {
		t.Fatal(err)
	}
	if vm.Origin == nil || vm.Origin.Kind != "golden" || vm.Origin.Parent != "p" || vm.State != "running" {
		t.Errorf("new --from: %+v", vm)
	}

	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"fork", "nope"}, `no VM named "nope"`},
		{[]string{"fork", "w", "--count", "0"}, "--count 0"},
		{[]string{"fork", "w", "--name", "Bad"}, "uppercase"},
		{[]string{"new", "--from", "w"}, "golden VM is suspended to disk or stopped"},
		{[]string{"resume", "w", "--to-disk"}, "unknown flag"},
	} {
		code, _, errs := d.run("", tt.args...)
		if code == 0 || !strings.Contains(errs, tt.says) {
			t.Errorf("boxd %s: exit %d, stderr %q; want it to say %q", strings.Join(tt.args, " "), code, errs, tt.says)
		}
	}
}

func TestCLIForkHelp(t *testing.T) {
	for _, c := range []string{"fork", "suspend", "resume", "new"} {
		var out strings.Builder
		if code := Main([]string{c, "--help"}, strings.NewReader(""), &out, &out); code != 0 || !strings.Contains(out.String(), "Examples:") || !strings.Contains(out.String(), "--json") {
			t.Errorf("boxd %s --help: exit %d\n%s", c, code, out.String())
		}
	}
}
