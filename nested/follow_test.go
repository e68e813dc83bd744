package nested

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestFollower(t *testing.T) {
	for _, inotify := range []bool{true, false} {
		t.Run(map[bool]string{true: "inotify", false: "polling"}[inotify], func(t *testing.T) {
			dir := t.TempDir()
			if err := (runSpec{cmd: []string{"true"}, dir: "/"}).write(dir); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr syncBuffer
			readyCh := make(chan float64, 2)
			fl, err := newFollower(dir, &stdout, &stderr, func(up float64) { readyCh <- up })
			if err != nil {
				t.Fatal(err)
			}
			if !inotify && fl.watch != nil {
				fl.watch.Close()
				fl.watch = nil
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { fl.run(stop); close(done) }()

			// A partly written ready file is not reported.
			mustWrite(t, filepath.Join(dir, fileReady), "1.5")
			mustWrite(t, filepath.Join(dir, fileReady), "1.50\n")
			if up := <-readyCh; up != 1.5 {
				t.Errorf("ready uptime %v; want 1.5", up)
			}
			appendFile(t, filepath.Join(dir, fileStdout), "first line\n")
			eventually(t, "live stdout", func() bool { return stdout.String() == "first line\n" })
			appendFile(t, filepath.Join(dir, fileStderr), "oops\n")
			eventually(t, "live stderr", func() bool { return stderr.String() == "oops\n" })

			// What is written before stop is copied, however late it is seen.
			appendFile(t, filepath.Join(dir, fileStdout), strings.Repeat("x", 100<<10))
			close(stop)
			<-done
			if got := stdout.Len(); got != len("first line\n")+100<<10 {
				t.Errorf("stdout has %d bytes after stop", got)
			}
			if len(readyCh) != 0 {
				t.Error("ready reported twice")
			}
		})
	}
}

func TestFollowerNeedsFiles(t *testing.T) {
	if _, err := newFollower(t.TempDir(), nil, nil, func(float64) {}); err == nil {
		t.Error("newFollower succeeded without stdout/stderr files")
	}
}
