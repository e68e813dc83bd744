package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/client"
)

// Version is set at build time with -ldflags "-X github.com/boxd-dev/boxd/cli.Version=...".
var Version = "dev"

type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"go_version"`
	// Daemon is the daemon's version, when one answers on the socket.
	Daemon *api.VersionInfo `json:"daemon,omitempty"`
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	var socket string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print boxd's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo{Version: Version, GoVersion: runtime.Version()}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v.Commit = s.Value
					}
				}
			}
			// The daemon's version is extra: a daemon that does not answer
			// quickly is left out, never an error.
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
			defer cancel()
			c := client.New(client.SocketPath(socket))
			if dv, err := c.Version(ctx); err == nil {
				v.Daemon = &dv
			}
			c.Close()
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "boxd %s (%s)\n", v.Version, v.GoVersion)
			if v.Daemon != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "daemon %s (%s, API v%d)\n", v.Daemon.Version, v.Daemon.GoVersion, v.Daemon.API)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	cmd.Flags().StringVar(&socket, "socket", "", "the daemon's socket, asked for its version (default $"+client.SocketEnv+", else "+client.DefaultSocket+")")
	return cmd
}
