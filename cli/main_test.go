package cli

import (
	"os"
	"testing"

	"github.com/boxd-dev/boxd/internal/fakevmm"
)

// daemonEnv makes the test binary run `boxd daemon` (with fake backends)
// instead of the tests: the CLI tests start the daemon as its own process,
// so that killing it is a real daemon crash.
const daemonEnv = "BOXD_CLI_TEST_DAEMON"

func TestMain(m *testing.M) {
	fakevmm.Run() // the daemon's monitors re-exec this binary as "vmm"
	if os.Getenv(daemonEnv) != "" {
		backends, daemonProbe = fakeBackends, fakeProbe
		os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
