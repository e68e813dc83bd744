// Package wire is the host↔guest agent protocol: the frame codec, the JSON
// messages, and the Mux that multiplexes channels with per-stream flow
// control over one connection. Both the host client (package agent) and the
// guest server (guest-init/agent) are built on it; docs/agent-protocol.md is
// the prose version of what follows.
//
// # Frames
//
// A connection carries frames, each a 12-byte big-endian header and a payload:
//
//	0  uint32 payload length (≤ MaxPayload, 4 MiB)
//	4  uint8  type
//	5  uint8  stream (Data, EOF, Window only; else 0)
//	6  uint16 reserved, zero
//	8  uint32 channel (0 only for Hello)
//
// Types: Hello(1), Open(2), Reply(3), Data(4), EOF(5), Window(6), Control(7),
// Close(8). Data payloads are 1..MaxDataChunk (64 KiB) raw bytes, EOF is
// empty, Window is a 4-byte non-zero credit increment; the others are JSON.
// Any header or payload breaking these rules, an unknown type included, is a
// protocol error that closes the connection. The decoder validates the header
// before it allocates, so hostile input never costs more than MaxPayload.
//
// # Handshake and versions
//
// The client sends Hello first; the server answers with its own Hello even
// when the majors differ (so the client can name both), then closes. Hello
// carries major/minor, capabilities and the sender's receive window. Peers
// with different majors refuse each other (ErrVersion); a minor bump adds
// optional fields or ops behind a capability. The Hello layout is frozen.
//
// # Channels
//
// The client opens a channel with an Open frame {"op", "args"} on a fresh
// channel number. The server answers:
//
//   - unary ops (ping, stat, ...): one Close frame carrying a Result
//     {"result"} or {"error": {"code", "message"}};
//   - streaming ops (exec, attach, read_file, write_file, subscribe): a Reply
//     (Result; the op is running) followed eventually by Close (final Result,
//     e.g. the exit status), or a Close alone if the op failed to start.
//
// A Close from the server ends the channel: it implies EOF on its streams and
// the server sends nothing more on it. Frames may share a write: over vsock a
// write is a packet, the costly unit, so a server whose operation ends
// before it replied sends Reply and Close together (Channel.ReplyClose). A Close from the client aborts the
// channel: the server stops the operation (a foreground process is killed)
// and still sends its Close, which the client ignores. Frames for unknown
// channels are dropped, since they may cross an abort in flight.
//
// # Streams and flow control
//
// Each channel has three byte streams: 0 (stdin, uploads) flows
// client→server, 1 (stdout, downloads, event lines) and 2 (stderr) flow
// server→client. Each side announces a receive window in its Hello; a sender
// may have at most that many unacknowledged bytes per stream and the receiver
// returns credit with Window frames as its consumer reads (in quarters of the
// window). Exceeding the window is a protocol error. So the reading goroutine
// never blocks on a consumer, memory per stream is bounded by the window, and
// a slow consumer slows the producer — a process writing to stdout blocks as
// it would on a full pipe.
//
// Control frames (client→server, JSON {"signal"} or {"resize"}) act on a
// running channel; a bounded queue holds them for the handler.
package wire
