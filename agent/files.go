package agent

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/boxd-dev/boxd/agent/wire"
)

// WriteFile streams r into the guest file path, created with mode (permission
// bits) or truncated. The agent writes a temporary file beside path and
// renames it into place only after all bytes arrived, so a failed or cancelled
// upload leaves the old file, or none. Size is unbounded; data is chunked and
// flow-controlled.
func (c *Client) WriteFile(ctx context.Context, path string, mode fs.FileMode, r io.Reader) error {
	ch, err := c.open(ctx, wire.OpWriteFile, wire.WriteFileArgs{Path: path, Mode: uint32(mode.Perm())}, nil)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, ch.Abort)
	defer stop()
	w := &recordingWriter{w: ch.Writer(wire.StreamStdin)}
	if _, err := io.Copy(w, r); err != nil {
		if w.err != nil {
			// The server ended the channel, probably with its own error (disk
			// full): that is the better explanation.
			if msg, nerr := ch.Next(ctx); nerr == nil && msg.Type == wire.TypeClose {
				if derr := wire.DecodeResult(msg.Payload, nil); derr != nil {
					return fmt.Errorf("write %s: %w", path, derr)
				}
			}
		}
		ch.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	w.w.CloseWrite()
	msg, err := ch.Next(ctx)
	if err != nil {
		ch.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if msg.Type != wire.TypeClose {
		ch.Abort()
		return fmt.Errorf("write %s: %w: second reply", path, ErrProtocol)
	}
	return wire.DecodeResult(msg.Payload, nil)
}

// ReadFile opens the guest file path for streaming. The reader returns
// io.EOF only after the whole file arrived and the agent confirmed it; Close
// it to stop early. info is the file's state when opened. Cancelling ctx
// aborts the transfer.
func (c *Client) ReadFile(ctx context.Context, path string) (rc io.ReadCloser, info FileInfo, err error) {
	ch, err := c.open(ctx, wire.OpReadFile, wire.PathArgs{Path: path}, &info)
	if err != nil {
		return nil, FileInfo{}, err
	}
	return &fileReader{ch: ch, ctx: ctx, r: ch.Reader(wire.StreamStdout), stop: context.AfterFunc(ctx, ch.Abort)}, info, nil
}

type fileReader struct {
	ch   *wire.Channel
	ctx  context.Context
	r    io.Reader
	stop func() bool

	once sync.Once
	err  error // final status, set at EOF
}

func (f *fileReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		f.once.Do(func() {
			f.err = io.EOF
			msg, nerr := f.ch.Next(f.ctx)
			switch {
			case nerr != nil:
				f.err = nerr
			case msg.Type != wire.TypeClose:
				f.err = fmt.Errorf("%w: second reply", ErrProtocol)
			default:
				if derr := wire.DecodeResult(msg.Payload, nil); derr != nil {
					f.err = derr
				}
			}
			if ctxErr := f.ctx.Err(); ctxErr != nil && f.err == io.EOF {
				f.err = ctxErr
			}
		})
		err = f.err
	}
	return n, err
}

func (f *fileReader) Close() error {
	f.stop()
	f.ch.Abort()
	return nil
}

// Stat returns the state of path, following symbolic links.
func (c *Client) Stat(ctx context.Context, path string) (FileInfo, error) {
	var fi FileInfo
	err := c.call(ctx, wire.OpStat, wire.PathArgs{Path: path}, &fi)
	return fi, err
}

// ListDir lists directory path, sorted by name; symbolic links are reported
// as links (FileInfo.Link). A directory whose listing exceeds the 4 MiB frame
// limit (tens of thousands of entries) is an error.
func (c *Client) ListDir(ctx context.Context, path string) ([]FileInfo, error) {
	var fis []FileInfo
	err := c.call(ctx, wire.OpListDir, wire.PathArgs{Path: path}, &fis)
	return fis, err
}

// Remove removes a file or an empty directory.
func (c *Client) Remove(ctx context.Context, path string) error {
	return c.call(ctx, wire.OpRemove, wire.RemoveArgs{Path: path}, nil)
}

// RemoveAll removes path and everything under it; a missing path is not an error.
func (c *Client) RemoveAll(ctx context.Context, path string) error {
	return c.call(ctx, wire.OpRemove, wire.RemoveArgs{Path: path, Recursive: true}, nil)
}

// MkdirAll creates directory path and missing parents with mode.
func (c *Client) MkdirAll(ctx context.Context, path string, mode fs.FileMode) error {
	return c.call(ctx, wire.OpMkdir, wire.MkdirArgs{Path: path, Mode: uint32(mode.Perm())}, nil)
}

// recordingWriter tells a failed write from a failed read inside io.Copy.
type recordingWriter struct {
	w   *wire.SendStream
	err error
}

func (r *recordingWriter) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if err != nil {
		r.err = err
	}
	return n, err
}
