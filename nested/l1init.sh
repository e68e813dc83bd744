#!/bin/busybox sh
# PID 1 of the nested harness's L1 VM (host side: run.go).
#
# Protocol: lines on the virtio-serial port named boxd.control:
#   ready UPTIME    the command is about to start (UPTIME from /proc/uptime)
#   exit STATUS     the command finished with STATUS
#   error MESSAGE   L1 could not run the command
# The command's stdout and stderr go to the ports boxd.stdout and
# boxd.stderr. The kernel command line names the run's spec directory
# (boxd.spec=DIR, on the host's root): DIR/mounts lists the writable
# directories and DIR/run.sh runs the command inside the chroot.

/bin/busybox --install -s /bin
export PATH=/bin

ctlopen=
fail() {
	echo "boxd-l1: $*" >/dev/console
	[ -n "$ctlopen" ] && echo "error $*" >&3
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

port() {
	for p in /sys/class/virtio-ports/*; do
		if [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && [ -c "/dev/${p##*/}" ]; then
			echo "/dev/${p##*/}"
			return 0
		fi
	done
	return 1
}
# virtio_console learns its ports from the host asynchronously after probing.
n=0
until ctl=$(port boxd.control) && out=$(port boxd.stdout) && err=$(port boxd.stderr); do
	n=$((n + 1))
	[ $n -le 400 ] || fail "virtio-serial ports boxd.control/stdout/stderr did not appear"
	usleep 25000
done
exec 3>"$ctl"
ctlopen=1

spec=
for a in $(cat /proc/cmdline); do
	case $a in boxd.spec=*) spec=${a#boxd.spec=} ;; esac
done
[ -n "$spec" ] || fail "no boxd.spec= on the kernel command line"

mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro host /host ||
	fail "mount the host root (9p tag host)"
[ -f "/host$spec/mounts" ] || fail "run spec $spec/mounts is not visible in L1"

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
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out "/host$dir" ||
			fail "mount the output share on $dir"
		;;
	esac
done <"/host$spec/mounts"

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

echo "ready $(cut -d' ' -f1 /proc/uptime)" >&3
chroot /host /bin/sh "$spec/run.sh" </dev/null >"$out" 2>"$err" 3>&-
echo "exit $?" >&3
sync
poweroff -f
exit 1
