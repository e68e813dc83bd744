package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
)

// Client sends requests to one monitor. Its methods are safe for concurrent
// use; requests go one at a time.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// Dial connects to the control socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	return &Client{conn: c, r: newReader(c)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends req and waits for its response; a refused or failed request is an
// *Error. ctx bounds the whole exchange: when it ends, the connection is
// closed (the monitor still finishes a request it started).
func (c *Client) Do(ctx context.Context, req Request) (Response, error) {
	if err := req.Validate(); err != nil {
		return Response{}, fmt.Errorf("control: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	defer stop()
	b, _ := json.Marshal(req) // a Request always marshals
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return Response{}, c.fail(ctx, req, err)
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return Response{}, c.fail(ctx, req, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("control: %s: bad response: %w", req.Op, err)
	}
	if !resp.OK {
		return resp, &Error{Op: req.Op, Message: resp.Error}
	}
	return resp, nil
}

func (c *Client) fail(ctx context.Context, req Request, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("control: %s: %w", req.Op, ctx.Err())
	}
	return fmt.Errorf("control: %s: %w", req.Op, err)
}

// Pause pauses the VM.
func (c *Client) Pause(ctx context.Context) (Response, error) {
	return c.Do(ctx, Request{Op: OpPause})
}

// Resume resumes the VM.
func (c *Client) Resume(ctx context.Context) (Response, error) {
	return c.Do(ctx, Request{Op: OpResume})
}

// Status reports the VM's state.
func (c *Client) Status(ctx context.Context) (Response, error) {
	return c.Do(ctx, Request{Op: OpStatus})
}

// Fork writes a snapshot directory for children of the paused VM.
func (c *Client) Fork(ctx context.Context, dir string) (Response, error) {
	return c.Do(ctx, Request{Op: OpFork, Dir: dir})
}

// Suspend saves the VM to dir and ends its monitor.
func (c *Client) Suspend(ctx context.Context, dir string) (Response, error) {
	return c.Do(ctx, Request{Op: OpSuspend, Dir: dir})
}

// newReader holds a whole response line, so ReadSlice never returns a part.
func newReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, MaxLine) }

// Restore makes a standby monitor restore dir and run it.
func (c *Client) Restore(ctx context.Context, dir string) (Response, error) {
	return c.Do(ctx, Request{Op: OpRestore, Dir: dir})
}
