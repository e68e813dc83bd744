package agent

import (
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/boxd-dev/boxd/agent/wire"
)

// account is whom a process runs as.
type account struct {
	name string
	home string
	cred *syscall.Credential // nil: the agent's own credentials
}

// lookupUser resolves "", "name", "uid" or "uid:gid". Numeric ids need no
// passwd entry (a container image may lack one).
func lookupUser(spec string) (account, error) {
	if spec == "" {
		a := account{name: "root", home: "/root"}
		if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
			a.name, a.home = u.Username, u.HomeDir
		}
		return a, nil
	}
	uidStr, gidStr, hasGid := strings.Cut(spec, ":")
	var u *user.User
	var err error
	if _, nerr := strconv.ParseUint(uidStr, 10, 32); nerr == nil {
		u, err = user.LookupId(uidStr)
		if err != nil {
			u = &user.User{Uid: uidStr, Gid: uidStr, Username: uidStr, HomeDir: "/"}
		}
	} else if u, err = user.Lookup(uidStr); err != nil {
		return account{}, wire.Errorf(wire.CodeNotFound, "user %q: %v", uidStr, err)
	}
	if hasGid {
		u.Gid = gidStr
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return account{}, wire.Errorf(wire.CodeInvalid, "user %q: uid %q", spec, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return account{}, wire.Errorf(wire.CodeInvalid, "user %q: gid %q", spec, u.Gid)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	if cred.Groups == nil {
		cred.Groups = []uint32{} // setgroups([]): drop the agent's supplementary groups
	}
	return account{name: u.Username, home: u.HomeDir, cred: cred}, nil
}
