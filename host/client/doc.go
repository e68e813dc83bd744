// Package client is the typed Go client of the daemon's API (host/api) over
// its Unix socket: the CLI and the tests use it, and so can any Go program
// that drives boxd.
//
// Every error is either an *api.Error the daemon sent (code, message, hint)
// or a *DaemonError saying the daemon could not be reached and how to start
// it; transport details never leak as bare net errors.
package client
