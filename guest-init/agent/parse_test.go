package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/agent/wire"
)

// Tables as the kernel prints them on little-endian machines (this test's
// expectations assume one, as do the hex addresses below).
const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0
   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12347 1 0000000000000000 20 4 30 10 -1
   3: garbage
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
`

func TestParseProcNetTCP(t *testing.T) {
	tests := []struct {
		name, proto, table string
		want               []wire.Port
	}{
		{"tcp", "tcp", procNetTCP, []wire.Port{
			{Proto: "tcp", Addr: "127.0.0.1", Port: 8080},
			{Proto: "tcp", Addr: "0.0.0.0", Port: 22},
		}},
		{"tcp6", "tcp6", procNetTCP6, []wire.Port{
			{Proto: "tcp6", Addr: "::1", Port: 80},
			{Proto: "tcp6", Addr: "127.0.0.1", Port: 8081},
		}},
		{"empty", "tcp", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcNetTCP([]byte(tt.table), tt.proto)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseProcNetTCP(f *testing.F) {
	f.Add([]byte(procNetTCP))
	f.Add([]byte(procNetTCP6))
	f.Fuzz(func(t *testing.T, b []byte) {
		ports, _ := parseProcNetTCP(b, "tcp")
		for _, p := range ports {
			if p.Addr == "" || p.Addr == "invalid IP" {
				t.Fatalf("bad address in %+v", p)
			}
		}
	})
}

func TestParseOOMKill(t *testing.T) {
	tests := []struct {
		rec  string
		want wire.OOMKill
		ok   bool
	}{
		{"3,1234,5678,-;Out of memory: Killed process 4242 (stress) total-vm:1000kB, anon-rss:900kB", wire.OOMKill{Pid: 4242, Comm: "stress"}, true},
		{"3,1,2,-;Memory cgroup out of memory: Killed process 7 ((sd-pam)) total-vm:1kB\n SUBSYSTEM=x", wire.OOMKill{Pid: 7, Comm: "(sd-pam)"}, true},
		{"6,1,2,-;Killed process 7 (x) for another reason", wire.OOMKill{}, false},
		{"6,1,2,-;Out of memory: Killed process x (y)", wire.OOMKill{}, false},
		{"no separator", wire.OOMKill{}, false},
	}
	for _, tt := range tests {
		got, ok := parseOOMKill([]byte(tt.rec))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseOOMKill(%q) = %+v, %v; want %+v, %v", tt.rec, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseOOMKill(f *testing.F) {
	f.Add([]byte("3,1234,5678,-;Out of memory: Killed process 4242 (stress) total-vm:1000kB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, ok := parseOOMKill(b); ok && (k.Pid <= 0 || len(k.Comm) > 64) {
			t.Fatalf("%+v", k)
		}
	})
}
