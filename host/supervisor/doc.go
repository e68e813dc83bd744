// Package supervisor runs the daemon's monitors: one "boxd vmm" process per
// VM, each in its own session so it survives the daemon, with its output in
// a per-VM log file. It reports every monitor's end exactly once, with the
// exit status and the monitor's own account (--result-json).
//
// Monitors it started are its children and are reaped with wait. After a
// daemon restart the monitors still running are no longer its children: it
// adopts them by PID once their identity (start time and boot ID, from
// /proc) matches what was recorded, and watches them through a pidfd, which
// also makes signalling them immune to PID reuse. It never stops a monitor
// on its own: only Stop does, and Close leaves every monitor running.
package supervisor
