package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/boxd-dev/boxd/host/api"
)

// remoteRE matches NAME:/path; a local path that looks like one can be
// written ./NAME:/path.
var remoteRE = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*):(/.*)$`)

// cpEnd is one side of a copy.
type cpEnd struct {
	vm, path string // vm empty: local
}

func parseCpEnd(s string) cpEnd {
	if m := remoteRE.FindStringSubmatch(s); m != nil {
		return cpEnd{vm: m[1], path: m[2]}
	}
	return cpEnd{path: s}
}

// cpJSON is `boxd cp --json`.
type cpJSON struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Bytes       int64  `json:"bytes"`
}

func newCpCmd() *cobra.Command {
	var f hostFlags
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file between the host and a VM",
		Long: `Copy one file between the host and a VM. The VM side is NAME:/absolute/path.
A destination ending in / (or an existing local folder) receives the file
under its own name. "-" as the local side is standard input or output. The
guest file is replaced only once all of it arrived; its mode is the local
file's permission bits (0644 from standard input), and a download gets the
guest file's.`,
		Example: `  boxd cp ./main.py task-1:/srv/
  boxd cp task-1:/var/log/app.log ./app.log
  tar c src | boxd cp - task-1:/tmp/src.tar`,
		Args: cobra.ExactArgs(2),
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, args []string) error {
			src, dst := parseCpEnd(args[0]), parseCpEnd(args[1])
			var n int64
			var err error
			switch {
			case src.vm != "" && dst.vm != "":
				return errors.New("cp copies between the host and a VM: one side must be a local path")
			case src.vm == "" && dst.vm == "":
				return errors.New("cp copies between the host and a VM: one side must be NAME:/path")
			case dst.vm != "":
				n, dst, err = upload(ctx, cmd, f, src, dst)
			default:
				n, dst, err = download(ctx, cmd, f, src, dst)
			}
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), cpJSON{Source: args[0], Destination: dst.String(), Bytes: n})
			}
			return nil
		}),
	}
	f.add(cmd)
	return cmd
}

func (e cpEnd) String() string {
	if e.vm == "" {
		return e.path
	}
	return e.vm + ":" + e.path
}

func upload(ctx context.Context, cmd *cobra.Command, f hostFlags, src, dst cpEnd) (int64, cpEnd, error) {
	if err := nameArg(dst.vm); err != nil {
		return 0, dst, err
	}
	var r io.Reader
	mode := os.FileMode(0o644)
	if src.path == "-" {
		r = cmd.InOrStdin()
		if strings.HasSuffix(dst.path, "/") {
			return 0, dst, errors.New("copying standard input needs a destination file name, not a folder")
		}
	} else {
		file, err := os.Open(src.path)
		if err != nil {
			return 0, dst, err
		}
		defer file.Close()
		fi, err := file.Stat()
		if err != nil {
			return 0, dst, err
		}
		if !fi.Mode().IsRegular() {
			return 0, dst, fmt.Errorf("%s is not a regular file: cp copies one file (use tar through `boxd exec` for folders)", src.path)
		}
		r, mode = file, fi.Mode().Perm()
		if strings.HasSuffix(dst.path, "/") {
			dst.path += filepath.Base(src.path)
		}
	}
	if err := api.ValidPath(dst.path); err != nil {
		return 0, dst, err
	}
	res, err := f.client().WriteFile(ctx, dst.vm, dst.path, mode, r)
	return res.Bytes, dst, err
}

func download(ctx context.Context, cmd *cobra.Command, f hostFlags, src, dst cpEnd) (int64, cpEnd, error) {
	if err := nameArg(src.vm); err != nil {
		return 0, dst, err
	}
	if err := api.ValidPath(src.path); err != nil {
		return 0, dst, err
	}
	rc, info, err := f.client().ReadFile(ctx, src.vm, src.path)
	if err != nil {
		return 0, dst, err
	}
	defer rc.Close()
	if dst.path == "-" {
		if f.json {
			return 0, dst, errors.New("--json prints its document on standard output: copy to a file, not -")
		}
		n, err := io.Copy(cmd.OutOrStdout(), rc)
		return n, dst, err
	}
	if fi, err := os.Stat(dst.path); (err == nil && fi.IsDir()) || strings.HasSuffix(dst.path, "/") {
		dst.path = filepath.Join(dst.path, path.Base(src.path))
	}
	// Write beside the destination and rename, so a failed download never
	// leaves a truncated file in its place.
	tmp, err := os.CreateTemp(filepath.Dir(dst.path), "."+filepath.Base(dst.path)+".boxd-*")
	if err != nil {
		return 0, dst, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, rc)
	if err == nil {
		err = tmp.Chmod(os.FileMode(info.Mode).Perm())
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst.path)
	}
	return n, dst, err
}
