// Command guesttool runs inside e2e test guests (and beside them, in test network
// namespaces): it moves random data over TCP and vsock and prints SHA-256 sums
// so that both ends of a transfer can be compared. Built static (CGO_ENABLED=0)
// so it runs in a busybox initramfs.
//
//	guesttool tcp-send ADDR BYTES         send BYTES random bytes, print "sha256 HEX"
//	guesttool tcp-recv ADDR               accept one connection, print "sha256 HEX BYTES"
//	guesttool vsock-serve PORT N          for N connections: read to EOF, answer "sha256 HEX BYTES\n"; then exit
//	guesttool vsock-send CID PORT N BYTES N concurrent connections each sending BYTES; print "sha256 I HEX"
//	guesttool tcp-bench ADDR BYTES        send BYTES zeros as fast as possible, print "IO nettx MBps X"
//	guesttool tcp-sink ADDR               accept one connection, print "IO-LISTEN" first, read to EOF, print "IO netrx MBps X"
//	guesttool disk-bench DEV MIB SECONDS  O_DIRECT sequential write and read of MIB MiB in 1 MiB blocks,
//	                                      then random 4 KiB reads for SECONDS: "IO seqwrite MBps X p99us Y", ...
//	guesttool drain                       wait until the console (stdout) has sent every byte (tcdrain)
//
// The benchmark lines have one format, parsed by e2e/iobench_test.go:
// "IO WORKLOAD UNIT VALUE [KEY VALUE]...".
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "guesttool:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: guesttool tcp-send|tcp-recv|vsock-serve|vsock-send|tcp-bench|tcp-sink|disk-bench|drain ARGS")
	}
	num := func(s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("bad number %q", s))
		}
		return n
	}
	switch {
	case args[0] == "tcp-send" && len(args) == 3:
		c, err := net.Dial("tcp", args[1])
		if err != nil {
			return err
		}
		sum, err := send(c, num(args[2]))
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "sha256 %x\n", sum)
		return nil
	case args[0] == "tcp-recv" && len(args) == 2:
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "listening")
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "sha256 %x %d\n", h.Sum(nil), n)
		return nil
	case args[0] == "tcp-bench" && len(args) == 3:
		return tcpBench(args[1], num(args[2]), out)
	case args[0] == "tcp-sink" && len(args) == 2:
		return tcpSink(args[1], out)
	case args[0] == "disk-bench" && len(args) == 4:
		return diskBench(args[1], num(args[2]), num(args[3]), out)
	case args[0] == "drain" && len(args) == 1:
		return drain(os.Stdout)
	case args[0] == "vsock-serve" && len(args) == 3:
		return vsockServe(uint32(num(args[1])), int(num(args[2])), out)
	case args[0] == "vsock-send" && len(args) == 5:
		return vsockSend(uint32(num(args[1])), uint32(num(args[2])), int(num(args[3])), num(args[4]), out)
	}
	return fmt.Errorf("bad arguments %q", args)
}

// send writes n random bytes to c, closes it, and returns their SHA-256.
func send(c io.WriteCloser, n int64) ([]byte, error) {
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(c, h), rand.Reader, n); err != nil {
		return nil, err
	}
	return h.Sum(nil), c.Close()
}

func vsockServe(port uint32, conns int, out io.Writer) error {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		return err
	}
	if err := unix.Listen(fd, 64); err != nil {
		return err
	}
	fmt.Fprintln(out, "listening")
	var wg sync.WaitGroup
	defer wg.Wait()
	for range conns {
		nfd, _, err := unix.Accept(fd)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := os.NewFile(uintptr(nfd), "vsock")
			defer f.Close()
			h := sha256.New()
			n, err := io.Copy(h, f)
			if err != nil {
				fmt.Fprintf(f, "error %v\n", err)
				return
			}
			fmt.Fprintf(f, "sha256 %x %d\n", h.Sum(nil), n)
		}()
	}
	return nil
}

func vsockSend(cid, port uint32, conns int, n int64, out io.Writer) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sum, err := func() ([]byte, error) {
				fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return nil, err
				}
				if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
					unix.Close(fd)
					return nil, err
				}
				return send(os.NewFile(uintptr(fd), "vsock"), n)
			}()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("connection %d: %w", i, err)
			}
			if err == nil {
				fmt.Fprintf(out, "sha256 %d %x\n", i, sum)
			}
		}()
	}
	wg.Wait()
	return firstErr
}
