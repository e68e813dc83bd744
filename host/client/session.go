package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"

	"github.com/boxd-dev/boxd/host/api"
)

// Session is a streamed exec: the command runs until it exits; stdin,
// terminal size and signals go in, output comes out as it is produced.
// Write methods are safe for concurrent use with Wait.
type Session struct {
	rwc  io.ReadWriteCloser
	fw   *api.FrameWriter
	stop func() bool
}

// StartExec starts a command with a streamed session. Its stdin is open:
// send it with WriteStdin and end it with CloseStdin (a command that reads
// stdin waits for one or the other). Cancelling ctx closes the session,
// which kills the command.
func (c *Client) StartExec(ctx context.Context, name string, req api.ExecRequest) (*Session, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, "POST", c.url(vmPath(name, "/exec"), nil), bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", api.UpgradeProtocol)
	resp, err := c.do(hreq)
	if err != nil {
		return nil, err
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return nil, &DaemonError{Socket: c.socket, Err: fmt.Errorf("exec: daemon answered %s, not an upgrade", resp.Status)}
	}
	s := &Session{rwc: rwc, fw: api.NewFrameWriter(rwc)}
	s.stop = context.AfterFunc(ctx, func() { rwc.Close() })
	return s, nil
}

// WriteStdin sends p to the command's stdin.
func (s *Session) WriteStdin(p []byte) (int, error) {
	return s.fw.Stream(api.FrameStdin).Write(p)
}

// CloseStdin ends the command's stdin (with a TTY: sends end-of-file).
func (s *Session) CloseStdin() error { return s.fw.WriteFrame(api.FrameStdinClose, nil) }

// Resize changes the command's terminal size.
func (s *Session) Resize(rows, cols uint16) error {
	return s.fw.WriteFrame(api.FrameResize, api.ResizePayload(rows, cols))
}

// Signal sends sig to the command's process group.
func (s *Session) Signal(sig syscall.Signal) error {
	return s.fw.WriteFrame(api.FrameSignal, api.SignalPayload(int(sig)))
}

// Close ends the session; a command still running is killed.
func (s *Session) Close() error {
	s.stop()
	return s.rwc.Close()
}

// Wait copies output to stdout and stderr until the command ends, and
// returns how it ended. It then closes the session.
func (s *Session) Wait(stdout, stderr io.Writer) (api.ExecResult, error) {
	defer s.Close()
	buf := make([]byte, api.MaxFrame)
	for {
		f, err := api.ReadFrame(s.rwc, buf)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errors.New("connection closed before the command's exit status arrived")
			}
			return api.ExecResult{}, fmt.Errorf("exec: %w", err)
		}
		switch f.Type {
		case api.FrameStdout:
			if _, err := stdout.Write(f.Payload); err != nil {
				return api.ExecResult{}, fmt.Errorf("exec: write stdout: %w", err)
			}
		case api.FrameStderr:
			if _, err := stderr.Write(f.Payload); err != nil {
				return api.ExecResult{}, fmt.Errorf("exec: write stderr: %w", err)
			}
		case api.FrameExit:
			var res api.ExecResult
			if err := json.Unmarshal(f.Payload, &res); err != nil {
				return res, fmt.Errorf("exec: bad exit frame: %w", err)
			}
			return res, nil
		case api.FrameError:
			var e api.Error
			if err := json.Unmarshal(f.Payload, &e); err != nil {
				return api.ExecResult{}, fmt.Errorf("exec: bad error frame: %w", err)
			}
			return api.ExecResult{}, &e
		default:
			return api.ExecResult{}, fmt.Errorf("exec: unexpected frame type %d from the daemon", f.Type)
		}
	}
}

// ExecStream runs a command with a streamed session: stdin (nil: none) is
// sent as it is read, output is written to stdout and stderr as it comes.
func (c *Client) ExecStream(ctx context.Context, name string, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (api.ExecResult, error) {
	s, err := c.StartExec(ctx, name, req)
	if err != nil {
		return api.ExecResult{}, err
	}
	if stdin == nil {
		s.CloseStdin()
	} else {
		go func() {
			if _, err := io.Copy(writerFunc(s.WriteStdin), stdin); err == nil {
				s.CloseStdin()
			}
		}()
	}
	res, err := s.Wait(stdout, stderr)
	if err != nil && ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, err
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
