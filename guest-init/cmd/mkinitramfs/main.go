// Command mkinitramfs builds boxd's guest initramfs (see package
// guest-init/initramfs), cached under $BOXD_CACHE/initramfs by a hash of its
// inputs, and prints the archive's path as its last line of stdout.
//
//	mkinitramfs --init out/guest/init --boxd out/guest/boxd [--busybox /bin/busybox] [--gzip]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/boxd-dev/boxd/guest-init/initramfs"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if err := build(args, stdout, stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "mkinitramfs: %v\n", err)
		}
		return 2
	}
	return 0
}

func build(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkinitramfs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	s := initramfs.Spec{Compress: initramfs.None}
	fs.StringVar(&s.Init, "init", "", "boxd's guest init binary (static; required)")
	fs.StringVar(&s.Boxd, "boxd", "", "in-guest boxd CLI binary (static; optional)")
	fs.StringVar(&s.Busybox, "busybox", "/bin/busybox", `static busybox ("" for none)`)
	gz := fs.Bool("gzip", false, "gzip the archive (smaller file, slower boot: the guest inflates it)")
	cache := fs.String("cache", "", "cache directory (default $BOXD_CACHE, else $XDG_CACHE_HOME/boxd, else ~/.cache/boxd)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if s.Init == "" {
		return errors.New("--init is required")
	}
	if *gz {
		s.Compress = initramfs.Gzip
	}
	for _, p := range []string{s.Init, s.Boxd, s.Busybox} {
		if p == "" {
			continue
		}
		if err := initramfs.CheckStatic(p); err != nil {
			return err
		}
	}
	if s.Busybox != "" {
		apps, err := initramfs.Applets(s.Busybox)
		if err != nil {
			return err
		}
		s.Applets = apps
	}
	dir := *cache
	if dir == "" {
		var err error
		if dir, err = initramfs.CacheDir(); err != nil {
			return err
		}
	}
	t0 := time.Now()
	path, built, err := initramfs.Ensure(dir, s)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	how := "cached"
	if built {
		how = fmt.Sprintf("built in %v", time.Since(t0).Round(time.Millisecond))
	}
	fmt.Fprintf(stderr, "initramfs: %s, %.1f MiB, %d busybox applets\n", how, float64(fi.Size())/(1<<20), len(s.Applets))
	fmt.Fprintln(stdout, path)
	return nil
}
