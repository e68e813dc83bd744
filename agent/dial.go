package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// maxConnectReply bounds the monitor's answer to CONNECT ("OK 4294967295\n").
const maxConnectReply = 64

// DialVsock connects to vsock port of a guest through its monitor's Unix
// socket, by the Firecracker hybrid-vsock convention: send "CONNECT <port>\n",
// read "OK <hostport>\n", and the stream is then the guest's. The reply is
// read byte by byte so no guest bytes after it are consumed.
func DialVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("dial vsock: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := connectVsock(conn, port); err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, fmt.Errorf("dial vsock port %d via %s: %w", port, udsPath, err)
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	return conn, nil
}

func connectVsock(conn net.Conn, port uint32) error {
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return err
	}
	var line []byte
	var b [1]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			return fmt.Errorf("read connect reply: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		if len(line) == maxConnectReply {
			return errors.New("connect reply too long")
		}
		line = append(line, b[0])
	}
	_, err := ParseConnectReply(string(line))
	return err
}

// ParseConnectReply parses the monitor's answer to CONNECT, without its
// newline, and returns the host-side port it names.
func ParseConnectReply(line string) (uint32, error) {
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return 0, fmt.Errorf("connect refused: %q", line)
	}
	n, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("connect reply %q: %w", line, err)
	}
	return uint32(n), nil
}
