package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/client"
)

// hostFlags are the flags every daemon-facing command takes.
type hostFlags struct {
	socket string
	json   bool
}

func (f *hostFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.socket, "socket", "", "the daemon's socket (default $"+client.SocketEnv+", else "+client.DefaultSocket+")")
	cmd.Flags().BoolVar(&f.json, "json", false, "print one JSON document (see docs/cli.md)")
}

func (f *hostFlags) client() *client.Client { return client.New(client.SocketPath(f.socket)) }

// hostCmd wraps a daemon-facing command: it runs with a context cancelled by
// SIGINT/SIGTERM, and turns its errors into one JSON document with --json.
func hostCmd(f *hostFlags, run func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := run(ctx, cmd, args)
		if err == nil || !f.json {
			return err
		}
		var ee *exitError
		if errors.As(err, &ee) && ee.err == nil {
			return err // already reported
		}
		printJSON(cmd.OutOrStdout(), map[string]*api.Error{"error": cliError(err)})
		return &exitError{code: 1, err: err}
	}
}

// cliError is the JSON form of any error a command returns.
func cliError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	var de *client.DaemonError
	if errors.As(err, &de) {
		return &api.Error{Code: api.CodeUnavailable, Message: de.Error()}
	}
	return &api.Error{Code: "error", Message: err.Error()}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nameArg validates a VM name argument before any request is made.
func nameArg(name string) error {
	if err := api.ValidName(name); err != nil {
		return err
	}
	return nil
}

func warnf(cmd *cobra.Command, format string, args ...any) {
	fmt.Fprintf(cmd.ErrOrStderr(), "boxd: "+format+"\n", args...)
}

// vmAction is the RunE of a command that acts on one named VM and prints it
// (its name, or the VM document with --json): reboot, suspend, resume.
func vmAction(f *hostFlags, act func(c *client.Client, ctx context.Context, name string) (api.VM, error)) func(*cobra.Command, []string) error {
	return hostCmd(f, func(ctx context.Context, cmd *cobra.Command, args []string) error {
		if err := nameArg(args[0]); err != nil {
			return err
		}
		vm, err := act(f.client(), ctx, args[0])
		if err != nil {
			return err
		}
		if f.json {
			return printJSON(cmd.OutOrStdout(), vm)
		}
		fmt.Fprintln(cmd.OutOrStdout(), vm.Name)
		return nil
	})
}
