// Command init is boxd's guest PID 1 (see package initsteps), and, run as
// "init agent", the guest agent process that PID 1 supervises.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/boxd-dev/boxd/guest-init/initsteps"
)

func main() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) }

// run dispatches on the mode: "agent" serves the guest agent, anything else
// is PID 1. A non-zero status from PID 1 panics the kernel, on purpose: the
// monitor then reports a crash instead of a half-booted guest.
func run(args []string, stdout, stderr io.Writer) int {
	var err error
	if len(args) > 1 && args[1] == "agent" {
		err = initsteps.RunAgent(args[2:], stderr)
	} else {
		err = initsteps.Main(args, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "boxd-init: %v\n", err)
		return 1
	}
	return 0
}
