package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"

	"github.com/boxd-dev/boxd/host/api"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/boxd/boxd.sock"

// SocketEnv names the environment variable that overrides DefaultSocket.
const SocketEnv = "BOXD_SOCKET"

// SocketPath returns flag if set, else $BOXD_SOCKET, else DefaultSocket.
func SocketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if s := os.Getenv(SocketEnv); s != "" {
		return s
	}
	return DefaultSocket
}

// Client talks to one daemon. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client of the daemon listening on socket.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
		MaxIdleConns:       4,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Socket returns the daemon's socket path.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// DaemonError says the daemon could not be reached.
type DaemonError struct {
	Socket string
	Err    error
}

func (e *DaemonError) Error() string {
	switch {
	case errors.Is(e.Err, fs.ErrNotExist), errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("daemon not running at %s: start it with `boxd daemon` (or point --socket / $%s at a running one)", e.Socket, SocketEnv)
	case errors.Is(e.Err, fs.ErrPermission):
		return fmt.Sprintf("no permission to use the daemon socket %s: run as root (or as a member of the socket's group)", e.Socket)
	}
	return fmt.Sprintf("daemon at %s: %v", e.Socket, e.Err)
}

func (e *DaemonError) Unwrap() error { return e.Err }

func (c *Client) url(path string, q url.Values) string {
	u := "http://boxd" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// do sends a request and returns the response if its status is 2xx (or 101);
// otherwise it decodes the daemon's error.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, &DaemonError{Socket: c.socket, Err: opErr.Err}
		}
		return nil, &DaemonError{Socket: c.socket, Err: err}
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, api.MaxBody))
	var body struct {
		Error *api.Error `json:"error"`
	}
	if err := json.Unmarshal(data, &body); err != nil || body.Error == nil {
		return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("daemon answered %s: %.200s", resp.Status, data)}
	}
	return body.Error
}

// call sends a JSON request (in, if not nil) and decodes a JSON answer into out.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return &DaemonError{Socket: c.socket, Err: fmt.Errorf("bad answer to %s %s: %w", method, path, err)}
	}
	return nil
}

func vmPath(name, rest string) string { return "/v1/vms/" + url.PathEscape(name) + rest }

// Version returns the daemon's version.
func (c *Client) Version(ctx context.Context) (api.VersionInfo, error) {
	var v api.VersionInfo
	err := c.call(ctx, "GET", "/v1/version", nil, nil, &v)
	return v, err
}

// Create creates a VM and returns it once its agent answers.
func (c *Client) Create(ctx context.Context, req api.CreateRequest) (api.VM, error) {
	var vm api.VM
	err := c.call(ctx, "POST", "/v1/vms", nil, req, &vm)
	return vm, err
}

// List returns every VM, in name order.
func (c *Client) List(ctx context.Context) ([]api.VM, error) {
	var l api.VMList
	err := c.call(ctx, "GET", "/v1/vms", nil, nil, &l)
	return l.VMs, err
}

// Get returns one VM.
func (c *Client) Get(ctx context.Context, name string) (api.VM, error) {
	var vm api.VM
	err := c.call(ctx, "GET", vmPath(name, ""), nil, nil, &vm)
	return vm, err
}

// Destroy destroys the named VMs; the result lists those destroyed and why
// any others were not.
func (c *Client) Destroy(ctx context.Context, names ...string) (api.DestroyResult, error) {
	var res api.DestroyResult
	err := c.call(ctx, "DELETE", "/v1/vms", url.Values{"name": names}, nil, &res)
	return res, err
}

// DestroyAll destroys every VM.
func (c *Client) DestroyAll(ctx context.Context) (api.DestroyResult, error) {
	var res api.DestroyResult
	err := c.call(ctx, "DELETE", "/v1/vms", url.Values{"all": {"true"}}, nil, &res)
	return res, err
}

// Reboot restarts a VM's monitor with the same disk (starting it if it was
// stopped or crashed) and returns it once its agent answers.
func (c *Client) Reboot(ctx context.Context, name string) (api.VM, error) {
	var vm api.VM
	err := c.call(ctx, "POST", vmPath(name, "/reboot"), nil, nil, &vm)
	return vm, err
}

// Suspend pauses a running VM in memory or, with toDisk, saves it to a
// snapshot and ends its monitor.
func (c *Client) Suspend(ctx context.Context, name string, toDisk bool) (api.VM, error) {
	var vm api.VM
	err := c.call(ctx, "POST", vmPath(name, "/suspend"), nil, api.SuspendRequest{ToDisk: toDisk}, &vm)
	return vm, err
}

// Resume runs a suspended VM again and returns it once it answers.
func (c *Client) Resume(ctx context.Context, name string) (api.VM, error) {
	var vm api.VM
	err := c.call(ctx, "POST", vmPath(name, "/resume"), nil, nil, &vm)
	return vm, err
}

// Fork copies a VM. Copies that failed their checks are in the result's
// Errors; an error means none was attempted.
func (c *Client) Fork(ctx context.Context, name string, req api.ForkRequest) (api.ForkResult, error) {
	var res api.ForkResult
	err := c.call(ctx, "POST", vmPath(name, "/fork"), nil, req, &res)
	return res, err
}

// Exec runs a command to completion and returns its output and status (the
// non-streaming mode: each output is capped at api.MaxOutput).
func (c *Client) Exec(ctx context.Context, name string, req api.ExecRequest) (api.ExecResult, error) {
	var res api.ExecResult
	err := c.call(ctx, "POST", vmPath(name, "/exec"), nil, req, &res)
	return res, err
}

// Logs copies the VM's console log to w; with follow it keeps copying what
// the guest prints until ctx ends or the VM is destroyed.
func (c *Client) Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.url(vmPath(name, "/logs"), url.Values{"follow": {strconv.FormatBool(follow)}}), nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("logs: %w", err)
	}
	return trailerError(resp)
}

func trailerError(resp *http.Response) error {
	if msg := resp.Trailer.Get(api.HeaderError); msg != "" {
		return &api.Error{Code: api.CodeInternal, Message: msg}
	}
	return nil
}

// ReadFile opens a guest file for download. The reader reports the daemon's
// failure mid-transfer as an error, never as a short file ending in EOF.
func (c *Client) ReadFile(ctx context.Context, name, path string) (io.ReadCloser, api.FileInfo, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.url(vmPath(name, "/files"), url.Values{"path": {path}}), nil)
	if err != nil {
		return nil, api.FileInfo{}, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, api.FileInfo{}, err
	}
	var info api.FileInfo
	mode, err1 := strconv.ParseUint(resp.Header.Get(api.HeaderFileMode), 8, 32)
	size, err2 := strconv.ParseInt(resp.Header.Get(api.HeaderFileSize), 10, 64)
	if err1 != nil || err2 != nil {
		resp.Body.Close()
		return nil, info, &DaemonError{Socket: c.socket, Err: errors.New("download without file mode and size headers")}
	}
	info.Mode, info.Size = uint32(mode), size
	return &download{resp: resp}, info, nil
}

type download struct{ resp *http.Response }

func (d *download) Read(p []byte) (int, error) {
	n, err := d.resp.Body.Read(p)
	if err == io.EOF {
		if terr := trailerError(d.resp); terr != nil {
			return n, terr
		}
	}
	return n, err
}

func (d *download) Close() error { return d.resp.Body.Close() }

// WriteFile uploads r as the guest file path with permission bits mode; the
// file is replaced only once all of it arrived.
func (c *Client) WriteFile(ctx context.Context, name, path string, mode fs.FileMode, r io.Reader) (api.FileResult, error) {
	q := url.Values{"path": {path}, "mode": {fmt.Sprintf("%04o", mode.Perm())}}
	req, err := http.NewRequestWithContext(ctx, "PUT", c.url(vmPath(name, "/files"), q), io.NopCloser(r))
	if err != nil {
		return api.FileResult{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(req)
	if err != nil {
		return api.FileResult{}, err
	}
	defer resp.Body.Close()
	var res api.FileResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, &DaemonError{Socket: c.socket, Err: fmt.Errorf("bad answer to upload: %w", err)}
	}
	return res, nil
}
