package agent

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// A pump whose read deadline passed before it got to the pipe still delivers
// what the exited process left in it.
func TestDrainAfterDeadline(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Write([]byte("last words\n"))
	defer w.Close() // a descendant still holds the write end: no EOF
	r.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := r.Read(make([]byte, 1)); !os.IsTimeout(err) {
		t.Fatalf("read past the deadline: %v, want a timeout (the case drain handles)", err)
	}
	var out bytes.Buffer
	if err := drain(r, &out, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if out.String() != "last words\n" {
		t.Fatalf("drained %q", out.String())
	}
}
