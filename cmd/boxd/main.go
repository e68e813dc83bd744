// Command boxd is the host CLI, the daemon, the per-VM monitor and the in-guest CLI.
package main

import (
	"os"

	"github.com/boxd-dev/boxd/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
