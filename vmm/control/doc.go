// Package control is the protocol between the daemon and one running monitor
// ("boxd vmm --control SOCK"): pause, resume, fork and suspend a VM while it
// runs.
//
// The transport is a Unix stream socket that only root can open (the monitor
// creates it 0600). Each request is one JSON object on one line; the monitor
// answers each with one JSON line, in order, so a connection may carry any
// number of requests. Requests on one monitor are serialised: a fork never
// overlaps a resume.
//
// The package knows nothing about KVM: the monitor supplies a Handler, and the
// daemon uses Client. Requests are untrusted input to the monitor (another
// root process could connect): lines are bounded, unknown operations and
// relative paths are refused, and a malformed request never stops the VM.
package control
