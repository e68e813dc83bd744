package cli

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/nested"
)

func TestNestedNeedsCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"nested"}, nil, &stdout, &stderr); code != 1 {
		t.Errorf("boxd nested without a command exited %d; want 1 (stderr %q)", code, stderr.String())
	}
}

// TestNestedTimeoutStatus checks the exit status of a run that cannot finish
// in time. With a 1ms timeout nothing boots, so it takes no VM.
func TestNestedTimeoutStatus(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := Main([]string{"nested", "--force-l1", "--timeout", "1ms", "--out", t.TempDir(), "--", "sleep", "10"}, nil, &stdout, &stderr)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		// Without QEMU the harness fails first, and says what to install.
		if code != nestedExitHarness || !strings.Contains(stderr.String(), nested.InstallCommand) {
			t.Errorf("without QEMU: exit %d, stderr %q; want %d and the install command", code, stderr.String(), nestedExitHarness)
		}
		return
	}
	if code != nestedExitTimeout || !strings.Contains(stderr.String(), "timed out") {
		t.Errorf("exit %d, stderr %q; want %d and a timeout message", code, stderr.String(), nestedExitTimeout)
	}
}

func TestNestedArgsAfterCommandAreNotFlags(t *testing.T) {
	cmd := newNestedCmd()
	if err := cmd.ParseFlags([]string{"--timeout", "5s", "sh", "-c", "--timeout"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cmd.Flags().Args(), " "); got != "sh -c --timeout" {
		t.Errorf("command args %q; want \"sh -c --timeout\"", got)
	}
}
