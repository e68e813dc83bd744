// Package agent is the host side of the guest agent protocol: a Client that
// runs commands, moves files, follows events and applies lifecycle changes in
// a guest, over one connection to the agent listening on vsock port
// VsockPort. The protocol itself (frames, versions, flow control) is package
// agent/wire and docs/agent-protocol.md.
//
// One connection, many channels: every call opens its own channel on a
// shared stream, so concurrent execs and transfers do not wait for each other,
// and a call costs one round trip. A new connection per operation would add a
// second round trip through the monitor's vsock proxy (CONNECT/OK) plus a
// handshake to every exec, which is the cost Ping-vs-Exec benchmarks measure.
//
// Invariants:
//   - Everything the guest sends is untrusted. Frames are bounded (4 MiB),
//     every buffer is bounded by a flow-control window, and a guest that breaks
//     the protocol gets its connection closed (ErrProtocol), never a panic or
//     unbounded allocation on the host.
//   - A foreground process (Exec) lives no longer than its channel: when ctx
//     is cancelled, Process.Close is called, or the connection drops, the
//     agent kills its process group. Background processes (Spawn) belong to
//     the agent and survive disconnects.
//   - Output is streamed live, stdout and stderr separately, and flow
//     controlled end to end: callers must drain Process.Stdout and
//     Process.Stderr (or pass writers in the request).
package agent
