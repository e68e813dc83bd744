// Package vsock implements a virtio-vsock device (virtio 1.2 §5.10) in the
// monitor, with no vhost-vsock module: stream connections between guest
// AF_VSOCK sockets and host Unix sockets, following Firecracker's convention.
//
// # Host side
//
// The device listens on Config.UDSPath.
//
//   - Host → guest: a host process connects to UDSPath and writes
//     "CONNECT <port>\n". The device sends the guest a REQUEST to that port
//     from a fresh host port (≥ 2^30, unique among live connections). When
//     the guest answers RESPONSE, the device writes "OK <hostport>\n" and the
//     socket carries the stream both ways. If the guest answers RST (nothing
//     listening) or nothing within ConnectTimeout, the device closes the
//     socket without a word.
//   - Guest → host: a guest connecting to (CID 2, port P) is connected to the
//     Unix socket UDSPath_P (e.g. /run/vm1.vsock_1024). If nothing listens
//     there, the guest gets RST (ECONNRESET/ECONNREFUSED on its connect).
//
// Half-closes map both ways: a guest SHUTDOWN(SEND) becomes a write
// half-close (shutdown(SHUT_WR)) of the host socket once buffered data is
// written, SHUTDOWN(RCV) a read half-close; EOF from the host becomes
// SHUTDOWN(SEND) once its data is delivered. When the guest has shut down
// both directions and its data is written out, the device closes the host
// socket and answers RST, which completes the guest's close(). A host read
// or write error (the peer went away) resets the connection; a guest RST
// closes the host socket at once.
//
// # Flow control
//
// Each direction is bounded by credit (§5.10.6.3), so nothing in the monitor
// grows without bound:
//
//   - Guest → host: the device advertises buf_alloc = BufferSize and fwd_cnt
//     = bytes written to the host socket, and buffers at most BufferSize
//     unwritten bytes per connection. A guest that sends beyond its credit
//     breaks the protocol: the connection is reset (Stats.CreditViolations).
//     When the host socket drains, the device sends CREDIT_UPDATE if the
//     guest's view of free space fell below half and a quarter of the buffer
//     (or everything) was freed; data packets carry the credit too. A guest
//     CREDIT_REQUEST is always answered.
//   - Host → guest: the device takes the guest's buf_alloc and fwd_cnt from
//     every packet the guest sends and never has more than
//     buf_alloc-(sent-fwd_cnt) bytes in flight. It reads the host socket
//     only into a BufferSize buffer and only as much as the guest has credit
//     for, so a guest that stops reading stops the host writer (its socket
//     buffer fills). When data waits for credit the device asks once with
//     CREDIT_REQUEST.
//
// Packets for the guest wait in per-connection state (flags and the bounded
// buffer, never a packet queue) until the driver posts rx buffers and
// notifies; RSTs for stray guest packets wait in a queue of at most 256,
// and tx processing pauses while it is full.
//
// # Threading
//
// One worker goroutine owns the queues and every connection's protocol
// state, under Device.mu; it is woken through one channel by Notify, by the
// host goroutines and by control calls, never by a timer. Each connection
// has a reader and a writer goroutine for its host socket (Go's netpoller is
// the epoll loop), a dial goroutine while connecting, and a timer while the
// guest owes a RESPONSE. Lock order: Device.mu, then conn.mu; host
// goroutines take only conn.mu and the notification list's lock. Close
// closes every socket and waits for every goroutine.
//
// # Guest input
//
// Every tx packet is validated: a 44-byte header; src_cid the guest's CID
// and dst_cid the host (checked first: such packets are dropped silently, so
// a forged address is never answered); len within the buffer (and 0 for
// control packets); type STREAM; op known and valid for the connection's
// state. Other violations are answered with RST (resetting the connection
// if there is one). Violations are counted in Stats; none can
// panic or block the device. A corrupt ring sets DEVICE_NEEDS_RESET through
// the transport.
//
// # Lifecycle
//
// New listens and starts the worker; host clients may connect before the
// driver activates the device and wait for it. A driver reset (Reset) drops
// every connection, closing the host sockets. ResetTransport drops every
// connection and sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, as needed after
// snapshot restore or fork, when the guest's sockets have no host peers any
// more. Pause (mmio.Snapshotter) leaves the queues alone until Resume;
// host data and connections wait. RestoreState, after a snapshot restore,
// does what ResetTransport does, so the guest closes its stale connected
// sockets and keeps its listening ones. Close stops everything and removes
// the listening socket.
package vsock
