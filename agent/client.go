package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// Types shared with the guest agent, re-exported so callers need only this
// package. Their JSON forms are the wire forms (see agent/wire).
type (
	Hello         = wire.Hello
	ExitStatus    = wire.ExitStatus
	ProcessInfo   = wire.ProcessInfo
	FileInfo      = wire.FileInfo
	NetworkConfig = wire.NetworkConfig
	Event         = wire.Event
	EventType     = wire.EventType
	Port          = wire.Port
	ProcessExit   = wire.ProcessExit
	OOMKill       = wire.OOMKill
	// RemoteError is an error reported by the guest agent. errors.Is maps it
	// onto fs.ErrNotExist, fs.ErrExist, fs.ErrPermission, fs.ErrInvalid and
	// errors.ErrUnsupported.
	RemoteError = wire.Error
)

// Event types.
const (
	EventPortOpen    = wire.EventPortOpen
	EventPortClose   = wire.EventPortClose
	EventProcessExit = wire.EventProcessExit
	EventOOMKill     = wire.EventOOMKill
	EventOverflow    = wire.EventOverflow
)

// VsockPort is the guest agent's vsock port.
const VsockPort = wire.VsockPort

// Errors callers test for.
var (
	// ErrVersion: the guest agent speaks another major protocol version.
	ErrVersion = wire.ErrVersion
	// ErrProtocol: the guest agent broke the protocol; the connection is closed.
	ErrProtocol = wire.ErrProtocol
	// ErrClosed: the client was closed.
	ErrClosed = wire.ErrClosed
)

// DefaultHandshakeTimeout bounds NewClient when ctx has no deadline.
const DefaultHandshakeTimeout = 10 * time.Second

// Client is the host side of one connection to a guest agent. It is safe for
// concurrent use: every call runs on its own channel of the connection.
type Client struct {
	m *wire.Mux
}

// NewClient performs the handshake on conn and returns a client that owns
// conn. A guest agent of another major version yields an error wrapping
// ErrVersion.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultHandshakeTimeout)
		defer cancel()
	}
	m, err := wire.Handshake(ctx, conn, wire.Config{
		Role:  wire.Client,
		Hello: wire.Hello{Agent: "boxd-host"},
	})
	if err != nil {
		return nil, err
	}
	return &Client{m: m}, nil
}

// Dial connects to the guest agent of the VM whose hybrid-vsock Unix socket is
// udsPath (see DialVsock) and performs the handshake.
func Dial(ctx context.Context, udsPath string) (*Client, error) {
	conn, err := DialVsock(ctx, udsPath, VsockPort)
	if err != nil {
		return nil, err
	}
	return NewClient(ctx, conn)
}

// Server returns the guest agent's Hello: version, capabilities, name.
func (c *Client) Server() Hello { return c.m.Peer() }

// Close closes the connection. Foreground processes of this client are killed
// by the agent; background processes keep running.
func (c *Client) Close() error { return c.m.Close() }

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} { return c.m.Done() }

// Err says why the connection ended, or nil while it is up.
func (c *Client) Err() error { return c.m.Err() }

// call runs a unary op: Open, then one Close carrying the result.
func (c *Client) call(ctx context.Context, op string, args, result any) error {
	ch, err := c.m.Open(op, args)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	msg, err := ch.Next(ctx)
	if err != nil {
		ch.Abort()
		return fmt.Errorf("%s: %w", op, err)
	}
	if msg.Type != wire.TypeClose {
		ch.Abort()
		return fmt.Errorf("%s: %w: reply to a unary op", op, ErrProtocol)
	}
	return wire.DecodeResult(msg.Payload, result)
}

// open runs the first step of a streaming op: Open, then a Reply (the op is
// running; its result decodes into v) or a Close (it failed or finished at once).
func (c *Client) open(ctx context.Context, op string, args, v any) (*wire.Channel, error) {
	ch, err := c.m.Open(op, args)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	msg, err := ch.Next(ctx)
	if err != nil {
		ch.Abort()
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := wire.DecodeResult(msg.Payload, v); err != nil {
		ch.Abort()
		return nil, err
	}
	if msg.Type == wire.TypeClose {
		return nil, fmt.Errorf("%s: %w: closed without a reply or an error", op, ErrProtocol)
	}
	return ch, nil
}

// Ping makes one round trip to the agent, for readiness and latency checks.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, wire.OpPing, nil, nil)
}

// Reseed mixes seed into the guest's entropy pool and credits it (call after
// a restore or fork so clones do not share random state). At most 4096 bytes.
func (c *Client) Reseed(ctx context.Context, seed []byte) error {
	if len(seed) == 0 || len(seed) > wire.MaxSeed {
		return fmt.Errorf("reseed: seed of %d bytes, want 1..%d", len(seed), wire.MaxSeed)
	}
	return c.call(ctx, wire.OpReseed, wire.ReseedArgs{Seed: seed}, nil)
}

// SetNetwork gives the guest its network identity (address, route, DNS,
// hostname, optionally MAC).
func (c *Client) SetNetwork(ctx context.Context, cfg NetworkConfig) error {
	return c.call(ctx, wire.OpSetNetwork, cfg, nil)
}

// SetClock sets the guest's realtime clock.
func (c *Client) SetClock(ctx context.Context, t time.Time) error {
	return c.call(ctx, wire.OpSetClock, wire.ClockArgs{UnixNano: t.UnixNano()}, nil)
}

// ResetVsock makes the agent drop every connection (this one included, after
// it answers) and listen afresh; call it after a restore or fork, then dial
// again.
func (c *Client) ResetVsock(ctx context.Context) error {
	return c.call(ctx, wire.OpResetVsock, nil, nil)
}

// SignalProcess sends sig to the process group of background process id.
func (c *Client) SignalProcess(ctx context.Context, id string, sig syscall.Signal) error {
	return c.call(ctx, wire.OpSignal, wire.SignalArgs{ID: id, Signal: int(sig)}, nil)
}

// WaitProcess waits for background process id to end and returns its status.
func (c *Client) WaitProcess(ctx context.Context, id string) (ExitStatus, error) {
	var st ExitStatus
	err := c.call(ctx, wire.OpWait, wire.IDArgs{ID: id}, &st)
	return st, err
}

// ListProcesses lists background processes, running and recently ended.
func (c *Client) ListProcesses(ctx context.Context) ([]ProcessInfo, error) {
	var ps []ProcessInfo
	err := c.call(ctx, wire.OpListProcesses, nil, &ps)
	return ps, err
}

var errBadRequest = errors.New("invalid request")
