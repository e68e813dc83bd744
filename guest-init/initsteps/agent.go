package initsteps

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/guest-init/agent"
	"github.com/boxd-dev/boxd/guest-init/cmdline"
)

// readyFD is the descriptor on which the supervisor hands the agent its
// readiness pipe (and says so with --ready-fd); gateFD the one of the gate
// (--gate-fd, see Supervisor.Hold).
const (
	readyFD = 3
	gateFD  = 4
)

// RunAgent is the init binary's "agent" mode, run by the Supervisor: it
// listens on the vsock port, reports readiness on fd 3 and serves until
// SIGTERM.
func RunAgent(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Uint("port", cmdline.DefaultAgentPort, "vsock port to listen on")
	rfd := fs.Int("ready-fd", -1, "write \""+agentReadyLine+"\" to this inherited descriptor once listening")
	gfd := fs.Int("gate-fd", -1, "listen only once this inherited descriptor reads EOF")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *gfd >= 0 {
		gate := os.NewFile(uintptr(*gfd), "gate")
		io.Copy(io.Discard, gate) // EOF, or an error: either way, go on
		gate.Close()
	}
	var ready *os.File
	if *rfd >= 0 {
		ready = os.NewFile(uintptr(*rfd), "ready")
	}
	if *port == 0 || *port >= 1<<32-1 {
		return fmt.Errorf("agent: bad port %d", *port)
	}
	// Bound to any CID: a forked or restored VM may get a new one.
	listen := func() (net.Listener, error) {
		return vsock.ListenContextID(unix.VMADDR_CID_ANY, uint32(*port), nil)
	}
	ln, err := listen()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if ready != nil {
		fmt.Fprintln(ready, agentReadyLine)
		ready.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	logf := consoleLog(stderr)
	return agent.Serve(ctx, ln, agent.Options{Listen: listen, Logf: func(f string, a ...any) { logf("agent: "+f, a...) }})
}
