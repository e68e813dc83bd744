package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/boxd-dev/boxd/host/quota"
)

// SchemaVersion is the version of the file layout this boxd writes.
const SchemaVersion = 1

// Errors callers test for.
var (
	ErrNotFound = errors.New("no such VM")
	ErrExists   = errors.New("a VM of that name exists")
	ErrLocked   = errors.New("store is in use by another process")
	ErrSchema   = errors.New("store schema not supported")
)

var (
	bucketMeta   = []byte("meta")
	bucketVMs    = []byte("vms")
	bucketConfig = []byte("config")
	keySchema    = []byte("schema")
	keyLimits    = []byte("limits")
)

// Store is the registry file. Its methods are safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens or creates the store at path. If another process holds it,
// Open gives up after lockWait with ErrLocked.
func Open(path string, lockWait time.Duration) (*Store, error) {
	if lockWait <= 0 {
		lockWait = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return fmt.Errorf("%w: schema %q", ErrSchema, v)
			}
			if n > SchemaVersion {
				return fmt.Errorf("%w: written by a newer boxd (schema %d, this boxd reads up to %d)", ErrSchema, n, SchemaVersion)
			}
			// Migrations from older schemas go here, one step per version.
		}
		if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketVMs, bucketConfig} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Create adds vm. check, if not nil, sees how many VMs exist and may refuse
// (a quota): count and insert are one transaction.
func (s *Store) Create(vm VM, check func(existing int) error) error {
	if vm.Name == "" {
		return errors.New("create: empty name")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVMs)
		if b.Get([]byte(vm.Name)) != nil {
			return fmt.Errorf("%q: %w", vm.Name, ErrExists)
		}
		if check != nil {
			if err := check(b.Stats().KeyN); err != nil {
				return err
			}
		}
		return put(b, vm)
	})
}

func put(b *bolt.Bucket, vm VM) error {
	data, err := json.Marshal(vm)
	if err != nil {
		return err
	}
	return b.Put([]byte(vm.Name), data)
}

func decode(name string, data []byte) (VM, error) {
	var vm VM
	if err := json.Unmarshal(data, &vm); err != nil {
		return VM{}, fmt.Errorf("record %q: %w", name, err)
	}
	return vm, nil
}

// Get returns the record of name.
func (s *Store) Get(name string) (VM, error) {
	var vm VM
	err := s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketVMs).Get([]byte(name))
		if data == nil {
			return fmt.Errorf("%q: %w", name, ErrNotFound)
		}
		var err error
		vm, err = decode(name, data)
		return err
	})
	return vm, err
}

// List returns every record, in name order.
func (s *Store) List() ([]VM, error) {
	vms := []VM{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVMs).ForEach(func(k, v []byte) error {
			vm, err := decode(string(k), v)
			if err != nil {
				return err
			}
			vms = append(vms, vm)
			return nil
		})
	})
	return vms, err
}

// Update applies f to the record of name and writes it back, atomically;
// an error from f leaves the record unchanged. f must not change the name.
func (s *Store) Update(name string, f func(*VM) error) (VM, error) {
	var vm VM
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVMs)
		data := b.Get([]byte(name))
		if data == nil {
			return fmt.Errorf("%q: %w", name, ErrNotFound)
		}
		var err error
		if vm, err = decode(name, data); err != nil {
			return err
		}
		if err := f(&vm); err != nil {
			return err
		}
		if vm.Name != name {
			return fmt.Errorf("update %q: the name changed to %q", name, vm.Name)
		}
		return put(b, vm)
	})
	return vm, err
}

// Delete removes the record of name.
func (s *Store) Delete(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVMs)
		if b.Get([]byte(name)) == nil {
			return fmt.Errorf("%q: %w", name, ErrNotFound)
		}
		return b.Delete([]byte(name))
	})
}

// Limits returns the stored quota configuration; ok is false if none was
// ever stored.
func (s *Store) Limits() (l quota.Limits, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketConfig).Get(keyLimits)
		if data == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(data, &l)
	})
	return l, ok, err
}

// SetLimits stores the quota configuration.
func (s *Store) SetLimits(l quota.Limits) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketConfig).Put(keyLimits, data)
	})
}
