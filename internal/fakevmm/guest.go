package fakevmm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/agent/wire"
	"github.com/boxd-dev/boxd/guest-init/cmdline"
	"github.com/boxd-dev/boxd/vmm/control"
)

// GuestFile is the file, in the folder of the VM's vsock socket, where the
// fake keeps what a real guest would know about itself (its identity as
// the agent's lifecycle calls set it). ReadGuest reads it through the agent.
const GuestFile = "fake-guest.json"

// SnapshotFile is the one file of a fake snapshot directory.
const SnapshotFile = "fake-snapshot.json"

// Guest is the fake guest's identity.
type Guest struct {
	Hostname string `json:"hostname"`
	Address  string `json:"address,omitempty"`
	MAC      string `json:"mac,omitempty"`
	// Seed is the last entropy seed (hex): Random derives from it, so two
	// guests never reseeded after a fork produce the same "random" bytes.
	Seed string `json:"seed"`
	// ClockOffsetNs is the guest's realtime clock minus the host's.
	ClockOffsetNs int64 `json:"clock_offset_ns"`
	// Fail carries the parent's fake.* failure switches into its forks:
	// "restore" (a restore fails), "noagent" (the agent never answers).
	Fail string `json:"fail,omitempty"`
}

// Random is what /dev/urandom would yield in this guest.
func (g Guest) Random() string {
	s := sha256.Sum256([]byte("urandom:" + g.Seed))
	return hex.EncodeToString(s[:16])
}

// Time is the guest's realtime clock now.
func (g Guest) Time() time.Time { return time.Now().Add(time.Duration(g.ClockOffsetNs)) }

// guest is the fake's live guest: it implements the agent's System, so the
// daemon's fix-ups after a fork or restore change what ReadGuest sees.
type guest struct {
	path string
	mu   sync.Mutex
	g    Guest // guarded by mu
}

func newGuest(dir string, g Guest) *guest {
	return &guest{path: filepath.Join(dir, GuestFile), g: g}
}

// bootGuest is a freshly booted guest: its identity comes from the kernel
// command line, as a real guest's does.
func bootGuest(dir, line string) *guest {
	c, _ := cmdline.Parse(line)
	g := Guest{Hostname: c.Hostname, Seed: hex.EncodeToString(c.Seed)}
	if c.Address.IsValid() {
		g.Address = c.Address.String()
	}
	for _, a := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(a, "fake.child="); ok {
			g.Fail = v
		}
	}
	return newGuest(dir, g)
}

func (g *guest) save() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	b, _ := json.Marshal(g.g)
	g.mu.Unlock()
	tmp := g.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, g.path)
}

func (g *guest) update(f func(*Guest)) error {
	g.mu.Lock()
	f(&g.g)
	g.mu.Unlock()
	return g.save()
}

func (g *guest) Reseed(seed []byte) error {
	return g.update(func(x *Guest) { x.Seed = hex.EncodeToString(seed) })
}

func (g *guest) SetNetwork(c wire.NetworkConfig) error {
	return g.update(func(x *Guest) {
		if c.Hostname != "" {
			x.Hostname = c.Hostname
		}
		if c.Address != "" {
			x.Address = c.Address
		}
		if c.MAC != "" {
			x.MAC = c.MAC
		}
	})
}

func (g *guest) SetClock(t time.Time) error {
	return g.update(func(x *Guest) { x.ClockOffsetNs = int64(time.Until(t)) })
}

func (g *guest) snapshot() Guest {
	if g == nil {
		return Guest{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.g
}

// ReadGuest reads the fake guest's identity through its agent; dir is the
// folder of the VM's vsock socket. It is how tests stand in for the
// daemon's probe of a real guest.
func ReadGuest(ctx context.Context, c *agent.Client, dir string) (Guest, error) {
	rc, _, err := c.ReadFile(ctx, filepath.Join(dir, GuestFile))
	if err != nil {
		return Guest{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return Guest{}, err
	}
	var g Guest
	return g, json.Unmarshal(b, &g)
}

// snapshot is a fake snapshot directory's content.
type snapshot struct {
	Guest   Guest     `json:"guest"`
	SavedAt time.Time `json:"saved_at"`
	// Sum is the SHA-256 of the guest's JSON: a flipped byte is refused on
	// restore, as the real monitor refuses a bad checksum.
	Sum string `json:"sum"`
}

func writeSnapshot(dir string, g Guest) error {
	if err := checkEmptyDir(dir); err != nil {
		return err
	}
	b, _ := json.Marshal(g)
	sum := sha256.Sum256(b)
	data, _ := json.Marshal(snapshot{Guest: g, SavedAt: time.Now().UTC(), Sum: hex.EncodeToString(sum[:])})
	return os.WriteFile(filepath.Join(dir, SnapshotFile), data, 0o444)
}

func checkEmptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("snapshot dir: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("snapshot dir %s is not empty", dir)
	}
	return nil
}

func readSnapshot(dir string) (snapshot, error) {
	data, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
	if err != nil {
		return snapshot{}, fmt.Errorf("restore: %w", err)
	}
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return snapshot{}, fmt.Errorf("restore %s: corrupt state file: %w", dir, err)
	}
	b, _ := json.Marshal(s.Guest)
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != s.Sum {
		return snapshot{}, fmt.Errorf("restore %s: state file checksum mismatch: the snapshot is corrupt", dir)
	}
	if strings.Contains(","+s.Guest.Fail+",", ",restore,") {
		return snapshot{}, fmt.Errorf("restore %s: refused (fake.child=restore)", dir)
	}
	return s, nil
}

// fakeControl answers the daemon's control requests.
type fakeControl struct {
	g         *guest
	fail      string // fake.control=OP[,OP]: those requests fail
	paused    bool
	suspended chan struct{}
	once      sync.Once
}

func serveControl(path string, g *guest, suspended chan struct{}, fail string) (*control.Server, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	return control.Serve(ln, &fakeControl{g: g, fail: fail, suspended: suspended}), nil
}

func (c *fakeControl) Do(req control.Request, resp *control.Response) error {
	err := c.do(req, resp)
	resp.State = "running"
	if c.paused {
		resp.State = "paused"
	}
	return err
}

func (c *fakeControl) do(req control.Request, resp *control.Response) error {
	if strings.Contains(","+c.fail+",", ","+req.Op+",") {
		return fmt.Errorf("fake: %s refused (fake.control=%s)", req.Op, c.fail)
	}
	switch req.Op {
	case control.OpPause:
		if c.paused {
			return errors.New("already paused")
		}
		c.paused = true
	case control.OpResume:
		if !c.paused {
			return errors.New("not paused")
		}
		c.paused = false
	case control.OpFork:
		if !c.paused {
			return errors.New("fork needs a paused VM: pause first")
		}
		if err := writeSnapshot(req.Dir, c.g.snapshot()); err != nil {
			return err
		}
		resp.Snapshot = &control.SnapshotInfo{Dir: req.Dir, MemBytes: 1 << 28, WrittenBytes: 4096}
	case control.OpSuspend:
		c.paused = true
		if err := writeSnapshot(req.Dir, c.g.snapshot()); err != nil {
			return err
		}
		resp.Snapshot = &control.SnapshotInfo{Dir: req.Dir, MemBytes: 1 << 28, WrittenBytes: 1 << 20}
		c.once.Do(func() { close(c.suspended) })
	}
	return nil
}
