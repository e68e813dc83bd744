package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/boxd-dev/boxd/agent/wire"
)

// checkPath insists on absolute paths: the agent's working directory is not
// something a host should depend on.
func checkPath(p string) error {
	if !filepath.IsAbs(p) {
		return wire.Errorf(wire.CodeInvalid, "path %q is not absolute", p)
	}
	return nil
}

// writeFile receives an upload into a temporary file beside the target and
// renames it into place once the client's EOF arrives, so readers never see a
// partial file and an aborted upload leaves nothing behind.
func (s *Server) writeFile(ch *wire.Channel, raw json.RawMessage) {
	var a wire.WriteFileArgs
	err := decodeArgs(raw, &a)
	if err == nil {
		err = checkPath(a.Path)
	}
	if err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	dir, base := filepath.Split(a.Path)
	f, err := os.CreateTemp(dir, "."+base+".boxd-*")
	if err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(fs.FileMode(a.Mode).Perm()); err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	ch.Reply(wire.EncodeResult(nil, nil))
	if _, err := io.CopyBuffer(f, ch.Reader(wire.StreamStdin), make([]byte, wire.MaxDataChunk)); err != nil {
		ch.Close(wire.EncodeResult(nil, fmt.Errorf("write %s: %w", a.Path, err)))
		return
	}
	if err := f.Close(); err != nil {
		ch.Close(wire.EncodeResult(nil, fmt.Errorf("write %s: %w", a.Path, err)))
		return
	}
	if err := os.Rename(f.Name(), a.Path); err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	ok = true
	ch.Close(wire.EncodeResult(nil, nil))
}

// readFile streams a file on stdout after replying with its state.
func (s *Server) readFile(ch *wire.Channel, raw json.RawMessage) {
	var a wire.PathArgs
	err := decodeArgs(raw, &a)
	if err == nil {
		err = checkPath(a.Path)
	}
	if err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	f, err := os.Open(a.Path)
	if err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = wire.Errorf(wire.CodeInvalid, "%s is a directory", a.Path)
	}
	if err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	ch.Reply(wire.EncodeResult(fileInfo(fi, ""), nil))
	w := ch.Writer(wire.StreamStdout)
	// A plain struct wrapper hides WriteTo/ReadFrom so chunks stay MaxDataChunk.
	if _, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{f}, make([]byte, wire.MaxDataChunk)); err != nil {
		ch.Close(wire.EncodeResult(nil, fmt.Errorf("read %s: %w", a.Path, err)))
		return
	}
	w.CloseWrite()
	ch.Close(wire.EncodeResult(nil, nil))
}

func fileInfo(fi fs.FileInfo, link string) wire.FileInfo {
	w := wire.FileInfo{Name: fi.Name(), Size: fi.Size(), Mode: uint32(fi.Mode()), ModTime: fi.ModTime(), Link: link}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		w.Uid, w.Gid = st.Uid, st.Gid
	}
	return w
}

func (s *Server) stat(_ context.Context, a wire.PathArgs) (any, error) {
	if err := checkPath(a.Path); err != nil {
		return nil, err
	}
	fi, err := os.Stat(a.Path)
	if err != nil {
		return nil, err
	}
	return fileInfo(fi, ""), nil
}

// listDirMax leaves room in the frame for the Result envelope.
const listDirMax = wire.MaxPayload - 4096

func (s *Server) listDir(_ context.Context, a wire.PathArgs) (any, error) {
	if err := checkPath(a.Path); err != nil {
		return nil, err
	}
	des, err := os.ReadDir(a.Path)
	if err != nil {
		return nil, err
	}
	out := make([]wire.FileInfo, 0, len(des))
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(filepath.Join(a.Path, de.Name()))
		}
		out = append(out, fileInfo(fi, link))
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	if len(b) > listDirMax {
		return nil, wire.Errorf(wire.CodeUnsupported, "listing of %s is %d bytes, over the %d byte limit", a.Path, len(b), listDirMax)
	}
	return json.RawMessage(b), nil
}

func (s *Server) remove(_ context.Context, a wire.RemoveArgs) (any, error) {
	if err := checkPath(a.Path); err != nil {
		return nil, err
	}
	if filepath.Clean(a.Path) == "/" {
		return nil, wire.Errorf(wire.CodeInvalid, "refusing to remove /")
	}
	if a.Recursive {
		return nil, os.RemoveAll(a.Path)
	}
	return nil, os.Remove(a.Path)
}

func (s *Server) mkdir(_ context.Context, a wire.MkdirArgs) (any, error) {
	if err := checkPath(a.Path); err != nil {
		return nil, err
	}
	return nil, os.MkdirAll(a.Path, fs.FileMode(a.Mode).Perm())
}
