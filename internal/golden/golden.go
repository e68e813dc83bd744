// Package golden compares JSON documents with golden files in testdata/,
// after replacing the values that differ between runs (IDs, times, PIDs) with
// placeholders. Field order and spelling are kept, so a golden file pins the
// exact document a client sees.
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// Volatile are the JSON keys whose values change from run to run.
var Volatile = []string{"id", "tap", "created", "started", "at", "pid", "duration_ms", "commit", "go_version",
	"parent_id", "snapshot", "total_ms", "monitor_us", "restore_ms", "fixup_ms", "verify_ms",
	"parent_paused_ms", "monitor_pause_us", "monitor_fork_us", "monitor_resume_us", "disk_clone_ms"}

var fieldRE = regexp.MustCompile(`"(` + strings.Join(Volatile, "|") + `)": ("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)`)

// Normalize replaces the values of volatile keys in indented JSON with
// "<key>", leaving empty strings and zeros alone (they are not volatile:
// "no PID" is part of the document).
func Normalize(doc []byte) []byte {
	return fieldRE.ReplaceAllFunc(doc, func(m []byte) []byte {
		sub := fieldRE.FindSubmatch(m)
		if v := string(sub[2]); v == `""` || v == "0" {
			return m
		}
		return []byte(`"` + string(sub[1]) + `": "<` + string(sub[1]) + `>"`)
	})
}

// Check compares doc (indented JSON) with testdata/name after normalising,
// or rewrites the file with -update.
func Check(t *testing.T, name string, doc []byte) {
	t.Helper()
	got := Normalize(doc)
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}
