package memory

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func dupFile(t *testing.T, f *os.File) *os.File {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), f.Name())
}

func fileByte(t *testing.T, f *os.File, off int64) byte {
	t.Helper()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

func guestByte(t *testing.T, m *RAM, gpa int64) byte {
	t.Helper()
	var b [1]byte
	if _, err := m.ReadAt(b[:], gpa); err != nil {
		t.Fatal(err)
	}
	return b[0]
}

// A parent RAM (shared), a child mapping its file privately, and the parent
// switched to private in place: each sees its own writes, the file keeps what
// it held at the switch.
func TestPrivateCopyOnWrite(t *testing.T) {
	const size, gpa = 4 << 20, 0x2345
	parent, err := New(size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	parent.WriteAt([]byte{10}, gpa)
	if got := fileByte(t, parent.File(), gpa); got != 10 {
		t.Fatalf("shared write not in file: %d", got)
	}
	child, err := MapPrivate(dupFile(t, parent.File()), size)
	if err != nil {
		t.Fatal(err)
	}
	defer child.Close()
	hostBefore := &parent.Host(parent.Regions()[0])[0]
	if err := parent.Remap(true); err != nil {
		t.Fatal(err)
	}
	if &parent.Host(parent.Regions()[0])[0] != hostBefore {
		t.Fatal("remap moved the host mapping")
	}
	if !parent.Private() || !child.Private() {
		t.Fatal("Private() false after MapPrivate/Remap")
	}
	if got := guestByte(t, parent, gpa); got != 10 {
		t.Fatalf("parent after remap reads %d, want 10", got)
	}
	parent.WriteAt([]byte{15}, gpa)
	child.WriteAt([]byte{13}, gpa)
	for _, c := range []struct {
		name string
		got  byte
		want byte
	}{
		{"parent", guestByte(t, parent, gpa), 15},
		{"child", guestByte(t, child, gpa), 13},
		{"file", fileByte(t, parent.File(), gpa), 10},
	} {
		if c.got != c.want {
			t.Errorf("%s holds %d, want %d", c.name, c.got, c.want)
		}
	}
	// Back to shared: the private copy is dropped, the file shows through.
	if err := parent.Remap(false); err != nil {
		t.Fatal(err)
	}
	if got := guestByte(t, parent, gpa); got != 10 {
		t.Errorf("parent after remap to shared reads %d, want the file's 10", got)
	}
}

func TestMapPrivateRefusesShortFile(t *testing.T) {
	m, err := New(2<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if r, err := MapPrivate(dupFile(t, m.File()), 4<<20); err == nil {
		r.Close()
		t.Fatal("mapped 4 MiB of a 2 MiB file")
	}
}
