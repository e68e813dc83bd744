package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/boxd-dev/boxd/host/quota"
)

func TestDaemonConfigFile(t *testing.T) {
	cmd := newDaemonCmd()
	fs := cmd.Flags()
	if err := fs.Parse([]string{"--max-vms", "3"}); err != nil {
		t.Fatal(err)
	}
	// The example shipped beside the systemd unit must parse.
	if err := applyConfigFile(fs, filepath.Join("..", "host", "systemd", "config.json")); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"kernel": "/var/lib/boxd/images/vmlinux", "max-mem": "8G", "subnet": "10.88.0.0/16",
		"max-vms": "3", // the command line wins
	} {
		if got := fs.Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"max-vm": 3}`), 0o644)
	if err := applyConfigFile(newDaemonCmd().Flags(), bad); err == nil || !strings.Contains(err.Error(), `unknown key "max-vm"`) {
		t.Errorf("unknown key: %v", err)
	}
	os.WriteFile(bad, []byte(`{"max-vms": "many"}`), 0o644)
	if err := applyConfigFile(newDaemonCmd().Flags(), bad); err == nil {
		t.Error("a non-number max-vms was accepted")
	}
}

func TestDaemonLimits(t *testing.T) {
	tests := []struct {
		args []string
		want func(*quota.Limits)
		err  string
	}{
		{nil, func(*quota.Limits) {}, ""},
		{[]string{"--max-vms", "20", "--max-cpus", "8"}, func(l *quota.Limits) { l.MaxVMs, l.MaxCPUs = 20, 8 }, ""},
		// Lowering a max pulls the default down with it...
		{[]string{"--max-mem", "2G"}, func(l *quota.Limits) { l.MaxMemMiB, l.DefaultMemMiB = 2048, 2048 }, ""},
		// ...unless the default is given too.
		{[]string{"--max-disk", "1T", "--default-disk", "20G"}, func(l *quota.Limits) { l.MaxDiskGiB, l.DefaultDiskGiB = 1024, 20 }, ""},
		{[]string{"--max-mem", "2"}, nil, "--max-mem"},
	}
	for _, tt := range tests {
		var f daemonFlags
		cmd := daemonCmd(&f)
		if err := cmd.Flags().Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		adjust, err := f.limits(cmd.Flags())
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: %v, want an error naming %s", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		want := quota.Defaults()
		tt.want(&want)
		if diff := cmp.Diff(want, adjust(quota.Defaults())); diff != "" {
			t.Errorf("%v (-want +got):\n%s", tt.args, diff)
		}
	}
}

func TestParseExecArgs(t *testing.T) {
	tests := []struct {
		args []string
		name string
		cmd  []string
		env  []string
		err  string
	}{
		{[]string{"vm", "echo hi"}, "vm", []string{"echo hi"}, nil, ""},
		{[]string{"vm", "--env", "A=1", "ls", "-l", "--json"}, "vm", []string{"ls", "-l", "--json"}, []string{"A=1"}, ""},
		{[]string{"-e", "A=1", "vm", "-e", "B=2", "--", "-weird"}, "vm", []string{"-weird"}, []string{"A=1", "B=2"}, ""},
		{[]string{"--", "vm", "ls"}, "vm", []string{"ls"}, nil, ""},
		{[]string{"vm"}, "", nil, nil, "no command"},
		{nil, "", nil, nil, "name the VM"},
		{[]string{"vm", "--bogus", "x"}, "", nil, nil, "unknown flag"},
	}
	for _, tt := range tests {
		cmd := newExecCmd()
		cmd.InitDefaultHelpFlag()
		name, argv, err := parseExecArgs(cmd, tt.args)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %v, want an error containing %q", tt.args, err, tt.err)
			}
			continue
		}
		env, _ := cmd.Flags().GetStringArray("env")
		if err != nil || name != tt.name || !cmp.Equal(argv, tt.cmd) || !cmp.Equal(env, tt.env, cmpEmpty) {
			t.Errorf("%q: name %q cmd %q env %q, %v; want %q %q %q", tt.args, name, argv, env, err, tt.name, tt.cmd, tt.env)
		}
	}
}

var cmpEmpty = cmpopts.EquateEmpty()
