package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/boxd-dev/boxd/agent/wire"
)

// tcpListen is the LISTEN state in /proc/net/tcp ("0A").
const tcpListen = 0x0A

// listeningPorts reads the tcp and tcp6 tables under dir.
func listeningPorts(dir string) (map[wire.Port]struct{}, error) {
	out := map[wire.Port]struct{}{}
	for _, proto := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(filepath.Join(dir, proto))
		if os.IsNotExist(err) {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return nil, err
		}
		ports, err := parseProcNetTCP(b, proto)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", proto, err)
		}
		for _, p := range ports {
			out[p] = struct{}{}
		}
	}
	return out, nil
}

// parseProcNetTCP extracts LISTEN sockets from a /proc/net/tcp{,6} table:
//
//	sl  local_address rem_address   st ...
//	 0: 0100007F:1F90 00000000:0000 0A ...
//
// Addresses are the kernel's in-memory words printed as hex, so each 32-bit
// group is in the machine's byte order; the port is plain big-endian hex.
// Lines that do not parse are skipped: a table is a snapshot, not a contract.
func parseProcNetTCP(b []byte, proto string) ([]wire.Port, error) {
	var out []wire.Port
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := bytes.Fields(sc.Bytes())
		if len(f) < 4 {
			continue
		}
		st, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil || st != tcpListen {
			continue
		}
		addrHex, portHex, ok := bytes.Cut(f[1], []byte{':'})
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(string(portHex), 16, 16)
		if err != nil {
			continue
		}
		raw, err := hex.DecodeString(string(addrHex))
		if err != nil || (len(raw) != 4 && len(raw) != 16) {
			continue
		}
		for i := 0; i < len(raw); i += 4 { // big-endian text of native words
			binary.NativeEndian.PutUint32(raw[i:], binary.BigEndian.Uint32(raw[i:]))
		}
		addr, _ := netip.AddrFromSlice(raw)
		out = append(out, wire.Port{Proto: proto, Addr: addr.Unmap().String(), Port: uint16(port)})
	}
	return out, sc.Err()
}
