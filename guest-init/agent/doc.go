// Package agent is the guest agent server: it runs inside each VM (started by
// PID 1), listens on vsock port wire.VsockPort, and serves the protocol of
// package agent/wire to the host's agent.Client. It also runs unchanged on the
// host over Unix sockets, which is how it is tested.
//
// What it owns and guarantees:
//   - Processes run in their own process group (their own session with a PTY),
//     so signals, timeouts and disconnects reach the whole tree. A timeout
//     sends SIGKILL to the group, optionally after SIGTERM and a grace period.
//   - A foreground process's group is SIGKILLed when its channel ends early —
//     client abort or lost connection — so no orphan outlives its client.
//     Background processes belong to the Server and are killed only when Serve
//     returns.
//   - Exit codes and signals are reported as the kernel gave them.
//   - Output is read in 32 KiB chunks and written to flow-controlled streams:
//     a slow client slows the process, the agent never buffers beyond the
//     window. After a process exits its pipes are drained until they are
//     idle for Options.WaitDelay, so a daemon left holding them ("cmd &")
//     cannot hold the exec open.
//   - A foreground exec without stdin or PTY holds its Reply and its EOFs
//     for up to Options.Coalesce while the process runs, never its output:
//     a short command's whole answer (Reply, Close with the exit status,
//     EOFs implied) leaves in one write, one vsock packet, as a ping's does.
//     Processes are started with a pidfd and reaped through the runtime's
//     poller (spawn.go), not by a thread blocked in wait.
//   - Background output goes to a bounded ring per process (Options.RingSize);
//     attachers replay it and follow, never slowing the process.
//   - Listening ports are scanned from /proc/net/tcp{,6} only while someone
//     subscribes; OOM kills come from /dev/kmsg, best effort.
//   - Lifecycle changes (entropy, clock, network, hostname) go through the
//     System interface so they can be faked in tests; Linux is the real one.
package agent
