// Package cli holds boxd's cobra commands. Commands are thin: they parse flags,
// call the package that does the work, and print text or JSON.
package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// exitError carries a specific process exit status out of a command (for example
// the status of a guest or of a command run in the nested harness).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// newRoot builds the command tree.
func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "boxd",
		Short: "boxd hands out full Linux machines (KVM microVMs) in milliseconds",
		Long: `boxd runs each sandbox as a KVM microVM with its own kernel, disk, network and vsock.

One binary plays every role: the host CLI, the daemon, the per-VM monitor
("boxd vmm") and the CLI inside each guest.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newVersionCmd(),
		newVMMCmd(),
		newBenchCmd(),
		newNestedCmd(),
		newDaemonCmd(),
		newNewCmd(),
		newExecCmd(),
		newLsCmd(),
		newInspectCmd(),
		newDestroyCmd(),
		newLogsCmd(),
		newCpCmd(),
		newShellCmd(),
		newRebootCmd(),
		newSuspendCmd(),
		newResumeCmd(),
		newForkCmd(),
	)
	return root
}

// Main runs boxd with args and returns the process exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "boxd:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "boxd:", err)
	return 1
}
