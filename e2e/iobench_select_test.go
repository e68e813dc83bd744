//go:build e2e

package e2e

import (
	"strings"
	"testing"
)

// BOXD_IOBENCH_WORKLOADS picks workloads in the guest's order, takes
// "disk" as the three disk workloads, and refuses unknown names; the guest
// script then runs only what was picked.
func TestIOSelect(t *testing.T) {
	names := func(ws []ioWorkload) string {
		var s []string
		for _, w := range ws {
			s = append(s, w.name)
		}
		return strings.Join(s, ",")
	}
	for spec, want := range map[string]string{
		"":            "nettx,netrx,seqwrite,seqread,randread",
		"nettx":       "nettx",
		"disk, nettx": "nettx,seqwrite,seqread,randread",
		"netrx,nettx": "nettx,netrx",
		"nettx,nettx": "nettx",
		"netrx,disk":  "netrx,seqwrite,seqread,randread",
	} {
		ws, err := ioSelect(spec)
		if err != nil || names(ws) != want {
			t.Errorf("ioSelect(%q) = %s, %v; want %s", spec, names(ws), err, want)
		}
	}
	for _, spec := range []string{"seqread", "nettx,", "NETTX", "all"} {
		if ws, err := ioSelect(spec); err == nil {
			t.Errorf("ioSelect(%q) = %s, want an error", spec, names(ws))
		}
	}

	ws, _ := ioSelect("nettx")
	script := ioScript("/bin/gt", true, ws)
	if !strings.Contains(script, "/bin/gt tcp-bench 10.0.0.1:5000") ||
		strings.Contains(script, "tcp-sink") || strings.Contains(script, "disk-bench") {
		t.Errorf("nettx-only script:\n%s", script)
	}
	all := ioScript("/bin/gt", false, ioWorkloads)
	for _, cmd := range []string{"tcp-bench", "tcp-sink", "disk-bench /dev/vda", "reboot -f"} {
		if !strings.Contains(all, cmd) {
			t.Errorf("full script lacks %q:\n%s", cmd, all)
		}
	}
	if got := ioNextWorkload(ws, "nettx"); got != "" {
		t.Errorf("after the only workload: %q", got)
	}
	if got := ioNextWorkload(ioWorkloads, "netrx"); got != "seqwrite" {
		t.Errorf("after netrx: %q", got)
	}
}

func TestIOHugePagesOf(t *testing.T) {
	rollup := `55d0c0000000-7ffd5a1ff000 ---p 00000000 00:00 0                          [rollup]
Rss:              540672 kB
Pss:              530000 kB
AnonHugePages:     24576 kB
ShmemPmdMapped:   491520 kB
FilePmdMapped:         0 kB
`
	want := "rss 528 MiB, in huge pages 504 MiB (anon 24, shmem 480, file 0)"
	if got := ioHugePagesOf(rollup); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
