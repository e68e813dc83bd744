package devstate

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	ok := []byte{3, 0, 7, 7, 7, 7}
	if err := Check(ok, 3, 6); err != nil {
		t.Errorf("Check of a good blob: %v", err)
	}
	if err := CheckMin(ok, 3, 4); err != nil {
		t.Errorf("CheckMin of a good blob: %v", err)
	}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"empty", Check(nil, 3, 6), "too short"},
		{"one byte", CheckMin([]byte{3}, 3, 2), "too short"},
		{"other version", Check([]byte{4, 0, 7, 7, 7, 7}, 3, 6), "unknown state version 4 (want 3)"},
		{"short", Check(ok[:5], 3, 6), "state of 5 bytes, want 6"},
		{"long", Check(append(ok, 0), 3, 6), "state of 7 bytes, want 6"},
		{"below minimum", CheckMin(ok, 3, 7), "want at least 7"},
	} {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.name, tt.err, tt.want)
		}
	}
}

func FuzzCheck(f *testing.F) {
	f.Add([]byte{1, 0, 9, 9}, 4)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if Check(b, 1, n) == nil && (len(b) != n || b[0] != 1 || b[1] != 0) {
			t.Fatalf("Check accepted %x for length %d", b, n)
		}
		if CheckMin(b, 1, n) == nil && (len(b) < n || len(b) < 2 || b[0] != 1 || b[1] != 0) {
			t.Fatalf("CheckMin accepted %x for minimum %d", b, n)
		}
	})
}
