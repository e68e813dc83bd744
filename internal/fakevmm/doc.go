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
package fakevmm
