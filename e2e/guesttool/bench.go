package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// tcpBench sends n zero bytes to addr as fast as the connection takes them
// and prints the rate, from connect to the last byte handed to the kernel
// and the close.
func tcpBench(addr string, n int64, out io.Writer) error {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < n; {
		m, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
		if err != nil {
			return err
		}
		sent += int64(m)
	}
	if err := c.Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "IO nettx MBps %.1f\n", float64(n)/1e6/time.Since(start).Seconds())
	return nil
}

// tcpSink accepts one connection on addr, reads it to EOF and prints the
// rate from the first byte to EOF. "IO-LISTEN" tells the other side it may
// connect.
func tcpSink(addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintln(out, "IO-LISTEN")
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	var n int64
	var start time.Time
	for {
		m, err := c.Read(buf)
		if n == 0 && m > 0 {
			start = time.Now()
		}
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n == 0 {
		return fmt.Errorf("tcp-sink: no data")
	}
	fmt.Fprintf(out, "IO netrx MBps %.1f bytes %d\n", float64(n)/1e6/time.Since(start).Seconds(), n)
	return nil
}

// diskBench measures dev with O_DIRECT (the guest's page cache out of the
// way): sequential 1 MiB writes then reads of mib MiB, then random 4 KiB
// reads for the given seconds. Each line carries the 99th percentile of
// the single operations' latency.
func diskBench(dev string, mib, seconds int64, out io.Writer) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// O_DIRECT needs aligned buffers: an anonymous mapping is page aligned.
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i)
	}
	total := mib << 20
	lat := make([]time.Duration, 0, 1<<16)
	op := func(f func() error) error {
		t := time.Now()
		err := f()
		lat = append(lat, time.Since(t))
		return err
	}

	start := time.Now()
	for off := int64(0); off < total; off += 1 << 20 {
		if err := op(func() error { _, err := unix.Pwrite(fd, buf, off); return err }); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	if err := unix.Fsync(fd); err != nil {
		return err
	}
	fmt.Fprintf(out, "IO seqwrite MBps %.1f p99us %d\n", float64(total)/1e6/time.Since(start).Seconds(), p99(lat))

	lat = lat[:0]
	start = time.Now()
	for off := int64(0); off < total; off += 1 << 20 {
		if err := op(func() error { _, err := unix.Pread(fd, buf, off); return err }); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	fmt.Fprintf(out, "IO seqread MBps %.1f p99us %d\n", float64(total)/1e6/time.Since(start).Seconds(), p99(lat))

	lat = lat[:0]
	var x uint64 = 88172645463325252 // xorshift: a fixed, cheap sequence of offsets
	blocks := uint64(total / 4096)
	start = time.Now()
	for deadline := start.Add(time.Duration(seconds) * time.Second); time.Now().Before(deadline); {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		off := int64(x%blocks) * 4096
		if err := op(func() error { _, err := unix.Pread(fd, buf[:4096], off); return err }); err != nil {
			return fmt.Errorf("random read at %d: %w", off, err)
		}
	}
	fmt.Fprintf(out, "IO randread IOPS %.0f p99us %d\n", float64(len(lat))/time.Since(start).Seconds(), p99(lat))
	return nil
}

// p99 returns the 99th percentile of d in microseconds.
func p99(d []time.Duration) int64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)*99)/100].Microseconds()
}

// drain waits until f, a terminal, has transmitted everything written to
// it (tcdrain): a VM that powers off right after its last echo would
// otherwise lose the bytes still in the UART's buffers.
func drain(f *os.File) error {
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1); err != nil && err != unix.ENOTTY {
		return fmt.Errorf("tcdrain: %w", err)
	}
	return nil
}
