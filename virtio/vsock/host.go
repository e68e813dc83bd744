package vsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// listen binds the host socket at path. A socket file left by a monitor
// that died is replaced; one that still accepts connections is an error.
func listen(path string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err == nil {
		return ln, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("vsock: listen: %w", err)
	}
	if fi, serr := os.Lstat(path); serr != nil || fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("vsock: listen: %w", err)
	}
	if c, derr := net.Dial("unix", path); derr == nil {
		c.Close()
		return nil, fmt.Errorf("vsock: listen: %s is in use: %w", path, err)
	}
	if rerr := os.Remove(path); rerr != nil {
		return nil, fmt.Errorf("vsock: remove stale socket: %w", rerr)
	}
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vsock: listen: %w", err)
	}
	return ln, nil
}

// acceptLoop accepts host clients until Close and gives each a handshake
// goroutine.
func (d *Device) acceptLoop() {
	defer d.wg.Done()
	var backoff time.Duration
	for {
		hc, err := d.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Typically EMFILE: back off (doubling, up to 1 s) instead of
			// spinning, and give up when the device closes.
			d.stats.AcceptErrors.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-d.stop:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		d.hsMu.Lock()
		if d.hsClosed || len(d.handshakes) >= d.cfg.MaxConnections {
			d.hsMu.Unlock()
			d.stats.ConnLimit.Add(1)
			hc.Close()
			continue
		}
		d.handshakes[hc] = struct{}{}
		d.wg.Add(1)
		d.hsMu.Unlock()
		go d.handshake(hc)
	}
}

// handshake reads the client's "CONNECT <port>\n" and registers a
// host-initiated connection; the device answers "OK <hostport>\n" once the
// guest accepts, or closes the socket if it refuses.
func (d *Device) handshake(hc *net.UnixConn) {
	defer d.wg.Done()
	port, err := readConnect(hc, time.Now().Add(d.cfg.ConnectTimeout))
	d.hsMu.Lock()
	delete(d.handshakes, hc)
	d.hsMu.Unlock()
	if err == nil {
		err = hc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		d.stats.BadHandshakes.Add(1)
		hc.Close()
		return
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		hc.Close()
		return
	}
	if len(d.conns) >= d.cfg.MaxConnections {
		d.stats.ConnLimit.Add(1)
		hc.Close()
		return
	}
	key := connKey{host: d.allocPort(port), guest: port}
	c := newConn(key, true)
	c.host = hc
	c.state = stateConnecting
	c.pend = pendRequest
	d.conns[key] = c
	d.ephemeral[key.host] = struct{}{}
	d.schedule(c)
	d.kick()
}

// connectLineMax bounds the CONNECT line ("CONNECT 4294967295\n" is 19).
const connectLineMax = 32

// readConnect reads one "CONNECT <port>\n" line byte by byte, so no byte the
// client sends after it is consumed here.
func readConnect(hc *net.UnixConn, deadline time.Time) (uint32, error) {
	if err := hc.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	var line []byte
	var b [1]byte
	for {
		if _, err := hc.Read(b[:]); err != nil {
			return 0, fmt.Errorf("read CONNECT line: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		if len(line) == connectLineMax {
			return 0, errors.New("CONNECT line too long")
		}
		line = append(line, b[0])
	}
	return parseConnect(string(line))
}

// parseConnect parses the line without its newline.
func parseConnect(line string) (uint32, error) {
	line = strings.TrimSuffix(line, "\r")
	arg, ok := strings.CutPrefix(line, "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("not a CONNECT line: %q", line)
	}
	port, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("CONNECT port: %w", err)
	}
	return uint32(port), nil
}

// allocPort returns a host port for a host-initiated connection to guest
// port guest, unused by any live connection. mu held; len(conns) <
// MaxConnections, so the search ends.
func (d *Device) allocPort(guest uint32) uint32 {
	for {
		p := d.nextPort
		d.nextPort++
		if d.nextPort < firstEphemeral {
			d.nextPort = firstEphemeral
		}
		if _, used := d.ephemeral[p]; used {
			continue
		}
		if _, used := d.conns[connKey{p, guest}]; used {
			continue
		}
		return p
	}
}
