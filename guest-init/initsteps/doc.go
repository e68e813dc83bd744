// Package initsteps is boxd's guest PID 1: a short orchestrator over a
// declarative list of boot steps (Early, then Late), followed by the life of
// PID 1 — reaping orphans, supervising the guest agent, and shutting the
// machine down when asked.
//
// Boot is data: each Step has a name, a function and whether its failure is
// fatal; a Parallel step is a group of independent steps run at once. Run executes a list in order against an Env whose System interface
// carries every privileged operation (mount, chroot, ioctl, netlink, MMIO),
// so the lists are unit-tested on the host against a temporary directory and
// a fake System; Linux is the real one.
//
// Every step logs one console line ("boxd-init: <step>: ok (<ms>)"); with the
// kernel's "quiet" flag only failures and the final "boot done" line are
// written, since each console byte costs the guest a VM exit.
//
// Life of PID 1 (see Main):
//   - The agent runs as a child process (the init binary's "agent" mode), not
//     as goroutines of PID 1: PID 1 reaps every child with wait4(-1), which
//     would steal the exit statuses the agent's own os/exec calls wait for.
//     It is restarted with a capped exponential backoff when it dies, and
//     signals readiness on a pipe, after which init writes boot-timer mark 2.
//     At boot it is started first and held (Supervisor.Hold: a gate pipe it
//     reads before listening) while init sets up the network and the guest
//     tools, so its exec and runtime start overlap them but no host reaches
//     a guest that lacks its hostname and address.
//   - Shutdown follows the busybox/sysvinit signal conventions: SIGUSR2 powers
//     off, SIGUSR1 halts (treated as power-off: a halted VM is useless),
//     SIGTERM and SIGINT reboot. The agent, or busybox poweroff in a shell,
//     asks PID 1 by sending it one of these.
//   - Shutdown: sync, SIGTERM to every process, a bounded wait, SIGKILL,
//     unmount disk-backed filesystems (the root is remounted read-only),
//     sync, write the power register, reboot(2). Without ACPI Linux cannot
//     power the machine off by itself; the register tells the monitor.
//
// Invariants:
//   - Init runs only as PID 1 (Main refuses otherwise): shutdown signals
//     every process of the machine.
//   - A non-fatal step's failure is logged and boot goes on; a fatal one ends
//     Main with an error, which panics the kernel and, with panic=-1, makes
//     the monitor report a crash rather than a VM that looks healthy.
package initsteps
