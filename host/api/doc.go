// Package api is the daemon's HTTP+JSON API, served on a Unix socket: the
// request and response types (shared with host/client), their validation,
// the framing of streamed exec sessions, and the HTTP handler that puts a
// Backend (the daemon) behind the routes documented in docs/api.md.
//
// Invariants:
//   - Every request is validated here before the Backend sees it: names
//     follow DNS label rules, sizes and counts are within bounds, paths are
//     absolute, unknown JSON fields are refused. JSON bodies are bounded
//     (MaxBody); stream frames are bounded (MaxFrame). The decoders are
//     fuzzed.
//   - Every failure reaches the client as one JSON Error with a stable code,
//     a message saying what went wrong, and, where there is one, a hint
//     saying what to do.
//   - An exec session that loses its client kills its command: the Backend's
//     Process is closed when the connection ends.
package api
