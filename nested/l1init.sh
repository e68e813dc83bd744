#!/bin/busybox sh
# PID 1 of the nested harness's L1 VM (host side: run.go, follow.go).
#
# The host shares a per-run directory (9p tag "boxd", mounted at /boxd):
#   in:  mounts   writable directories to set up ("overlay DIR", "out DIR")
#        run.sh   the command, run by the chroot's /bin/sh
#   out: ready    L1's /proc/uptime when the command starts
#        stdout, stderr   the command's output, appended as it comes
#        status   the command's exit status, written after all output
#        error    why L1 could not run the command
# 9p writes reach the host file before write(2) returns, so when status
# exists, stdout and stderr are complete.

/bin/busybox --install -s /bin
export PATH=/bin

shared=
fail() {
	echo "boxd-l1: $*" >/dev/console
	[ -n "$shared" ] && echo "$*" >>/boxd/error
	sync
	poweroff -f
	exit 1 # PID 1 exiting panics the kernel; with panic=-1 and -no-reboot QEMU exits.
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sys /sys || fail "mount /sys"
mount -t devtmpfs dev /dev || fail "mount /dev"

for m in /modules/*.ko; do
	[ -e "$m" ] || continue
	insmod "$m" || fail "insmod ${m##*/}"
done

p9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $p9 boxd /boxd || fail "mount the run directory (9p tag boxd)"
shared=1
mount -t 9p -o $p9,cache=loose,ro host /host || fail "mount the host root (9p tag host)"

# Writable directories: overlays whose upper layers live in L1's memory, and
# the output share. The host lists parents before children.
mount -t tmpfs -o mode=0755 rw /rw || fail "mount /rw"
i=0
while read -r kind dir; do
	case $kind in
	overlay)
		i=$((i + 1))
		mkdir -p "/rw/$i/upper" "/rw/$i/work"
		# The overlay's root takes its owner and mode from the upper layer.
		chmod "$(stat -c %a "/host$dir")" "/rw/$i/upper"
		chown "$(stat -c %u:%g "/host$dir")" "/rw/$i/upper"
		mount -t overlay -o "lowerdir=/host$dir,upperdir=/rw/$i/upper,workdir=/rw/$i/work" overlay "/host$dir" ||
			fail "overlay on $dir"
		;;
	out)
		mount -t 9p -o $p9 out "/host$dir" || fail "mount the output share on $dir"
		;;
	esac
done </boxd/mounts

mount -t proc proc /host/proc || fail "mount /proc in the chroot"
mount -t sysfs sys /host/sys || fail "mount /sys in the chroot"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup 2>/dev/null
mount -t devtmpfs dev /host/dev || fail "mount /dev in the chroot"
mkdir -p /dev/pts /dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /host/dev/pts || fail "mount /dev/pts in the chroot"
mount -t tmpfs -o mode=1777 shm /host/dev/shm || fail "mount /dev/shm in the chroot"
mount -t tmpfs -o mode=0755 run /host/run || fail "mount /run in the chroot"

hostname boxd-l1
ip link set lo up || fail "bring up lo"
[ -c /dev/kvm ] || echo "boxd-l1: /dev/kvm is missing" >/dev/console
# The kernel cannot autoload modules from inside the chroot, so load what
# boxd's networking, disks and tests use (tap devices, bridge, nftables NAT and
# isolation, veth, loop and XFS for reflinks) from the host's module tree now.
# A module the host kernel lacks is reported, not fatal.
chroot /host /sbin/modprobe -a tun bridge veth br_netfilter nf_tables nft_chain_nat \
	nft_masq nft_reject_inet nft_ct nft_meta_bridge nf_conntrack_netlink loop xfs 2>/dev/null ||
	for m in tun bridge veth br_netfilter nf_tables nft_chain_nat nft_masq nft_reject_inet \
		nft_ct nft_meta_bridge nf_conntrack_netlink loop xfs; do
		chroot /host /sbin/modprobe "$m" 2>/dev/null || echo "boxd-l1: modprobe $m failed" >/dev/console
	done
# Let guest RAM (a memfd that boxd's monitor madvises) use transparent huge
# pages, as QEMU's anonymous guest RAM does by default: fewer nested-paging
# entries for L2.
echo advise >/sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null

# The command writes into FIFOs, as into the pipes of any runner; cat copies
# them into the shared files. A file as stdout would be truncated by anything
# that reopens /dev/stdout.
mkfifo /tmp/stdout /tmp/stderr || fail "mkfifo"
cat /tmp/stdout >>/boxd/stdout &
o=$!
cat /tmp/stderr >>/boxd/stderr &
e=$!

# The heartbeat the host watches (heartbeatLine in control.go): an L1 that
# stops printing it for Config.HangAfter is stopped as hung (it has
# happened: L1 busy and silent, no panic, for many minutes) instead of at
# the run's timeout. On the console, not in /boxd: a 9p write every 2 s
# made L1 freeze under load. Its PID is in the chroot's /run, so a test can
# stop it.
(while :; do
	echo boxd-l1-heartbeat >/dev/console
	usleep 2000000
done) &
echo $! >/host/run/boxd-l1-heartbeat.pid
cut -d' ' -f1 /proc/uptime >/boxd/ready
chroot /host /bin/sh -s </boxd/run.sh >/tmp/stdout 2>/tmp/stderr
status=$?

# Output is complete once both copies end, which is when the last writer
# closes its end. Background processes the command left holding them get
# two seconds.
(usleep 2000000 && kill $o $e 2>/dev/null) &
w=$!
wait $o $e
kill $w 2>/dev/null
echo $status >/boxd/status
sync
poweroff -f
exit 1
