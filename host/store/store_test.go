package store

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	bolt "go.etcd.io/bbolt"

	"github.com/boxd-dev/boxd/host/quota"
)

// netipEqual compares netip values by ==.
var netipEqual = cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sample(name string) VM {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return VM{
		Name: name, ID: "0123456789ab", State: Running, CPUs: 2, MemMiB: 512, DiskGiB: 10, CID: 3,
		Lease: &Lease{VMID: "0123456789ab", TAP: "bx0123456789ab", MAC: "52:54:00:00:00:01",
			Address: netip.MustParsePrefix("10.77.0.2/24"), Gateway: netip.MustParseAddr("10.77.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("10.77.0.1")}},
		DiskPath: "/var/lib/boxd/disks/x.img", Dir: "/var/lib/boxd/vms/0123456789ab",
		Monitor: &Monitor{PID: 42, StartTime: 12345, BootID: "b"},
		Created: at, Started: at.Add(time.Second), Restarts: 1,
		LastExit: &Exit{Status: 3, Result: "reboot", Detail: "i8042 reset", At: at},
	}
}

func TestCRUDSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "boxd.db")
	s := open(t, path)
	a, b := sample("a"), sample("b")
	for _, vm := range []VM{b, a} {
		if err := s.Create(vm, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Create(a, nil); !errors.Is(err, ErrExists) {
		t.Errorf("second Create(a) = %v, want ErrExists", err)
	}
	got, err := s.Update("a", func(vm *VM) error { vm.State = Crashed; vm.Monitor = nil; return nil })
	if err != nil {
		t.Fatal(err)
	}
	a.State, a.Monitor = Crashed, nil
	if diff := cmp.Diff(a, got, netipEqual); diff != "" {
		t.Errorf("Update (-want +got):\n%s", diff)
	}
	if _, err := s.Update("a", func(vm *VM) error { return errors.New("no") }); err == nil {
		t.Error("Update with a failing f succeeded")
	}
	if _, err := s.Update("a", func(vm *VM) error { vm.Name = "c"; return nil }); err == nil {
		t.Error("Update renaming the VM succeeded")
	}
	s.Close()

	s = open(t, path)
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]VM{a, b}, list, netipEqual); diff != "" {
		t.Errorf("List after reopen (-want +got):\n%s", diff)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Update("a", func(*VM) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update of a missing VM = %v, want ErrNotFound", err)
	}
}

func TestCreateCheckSeesCount(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "boxd.db"))
	limit := quota.Limits{MaxVMs: 2}
	for i, name := range []string{"a", "b", "c"} {
		err := s.Create(sample(name), limit.CheckCount)
		var qe *quota.Error
		if refused := errors.As(err, &qe); refused != (i == 2) {
			t.Fatalf("Create #%d = %v", i+1, err)
		}
	}
	if _, err := s.Get("c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused VM was stored: %v", err)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "boxd.db")
	open(t, path)
	if s, err := Open(path, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "boxd.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte("99"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path, 0); !errors.Is(err, ErrSchema) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of schema 99 = %v, want ErrSchema", err)
	}
}

func TestLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "boxd.db")
	s := open(t, path)
	if _, ok, err := s.Limits(); ok || err != nil {
		t.Fatalf("Limits of a new store = ok %v, %v", ok, err)
	}
	want := quota.Defaults()
	want.MaxVMs = 3
	if err := s.SetLimits(want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	got, ok, err := s.Limits()
	if !ok || err != nil {
		t.Fatalf("Limits = ok %v, %v", ok, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Limits (-want +got):\n%s", diff)
	}
}
