package daemon_test

import (
	"context"
	"io"
	"testing"

	"github.com/boxd-dev/boxd/host/api"
)

// These measure the daemon's own cost over a fake monitor that is ready as
// soon as it listens: API, store, disk and lease calls, monitor spawn and
// the readiness handshake for create; API and agent round trips for exec.
// A real boot adds the guest's boot time on top (see bench/).

func BenchmarkCreateDestroy(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	for b.Loop() {
		vm, err := h.c.Create(ctx, api.CreateRequest{Name: "bench", MemMiB: 64, DiskGiB: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := h.c.Destroy(ctx, vm.Name); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExec(b *testing.B) {
	h := newHarness(b)
	h.create(api.CreateRequest{Name: "bench", MemMiB: 64, DiskGiB: 1})
	ctx := context.Background()
	req := api.ExecRequest{Argv: []string{"true"}}
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			if _, err := h.c.Exec(ctx, "bench", req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stream", func(b *testing.B) {
		for b.Loop() {
			if _, err := h.c.ExecStream(ctx, "bench", req, nil, io.Discard, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
}
