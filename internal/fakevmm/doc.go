// Package fakevmm is a stand-in for "boxd vmm" in tests that have no KVM:
// it takes the same flags, checks them as the monitor would, creates the
// hybrid-vsock Unix socket, and serves the real guest agent
// (guest-init/agent) behind the CONNECT/OK handshake, so commands exec'd
// "in the guest" really run, on the host, as children of the fake.
//
// A test binary becomes the fake when its TestMain calls Main for
// "vmm" arguments (see Main). The fake ends like a monitor:
//   - SIGTERM/SIGINT: the host stopped it, exit 0 ("host-stop");
//   - SIGUSR1: the guest rebooted, exit 3;
//   - SIGUSR2: the guest crashed, exit 4;
//
// each after writing --result-json. The kernel command line may carry
// fake.exit=N (exit N at once, as a monitor that fails to boot) and
// fake.noagent (never answer on vsock, as a guest that hangs in boot).
//
// With --control SOCK the fake serves vmm/control: pause, resume, status;
// fork DIR writes a fake snapshot (SnapshotFile, checksummed) into DIR;
// suspend DIR writes one and ends the fake with status 5 ("suspended").
// --restore DIR replaces --kernel: the fake refuses a snapshot whose
// checksum does not match, and its guest continues with the identity saved
// in it; with --layer-dir it links the snapshot's file there while it
// runs, as the monitor links the memory it maps. The fake's "guest" identity (hostname, address, entropy seed,
// clock offset) lives in GuestFile beside the vsock socket and changes
// through the agent's Reseed, SetNetwork and SetClock, so a daemon's
// fix-ups after a fork are observable (ReadGuest). More switches on the
// command line: fake.control=OP[,OP] (those control requests fail) and
// fake.child=restore|noagent (a fork of this VM fails to restore, or its
// agent never answers).
package fakevmm
