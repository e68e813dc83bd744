#!/usr/bin/env bash
# Boots a boxd microVM with the guest kernel and a busybox initramfs whose init
# runs a command, then powers off. On hosts without VT-x/AMD-V the VM runs
# inside the nested harness (boxd nested). Usage: scripts/demo.sh [COMMAND]
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-'echo "hello from a boxd VM"; uname -a; echo "cpus: $(nproc)"; head -1 /proc/meminfo'}
kernel=$(bash kernel/build.sh --print-path)
work=$(mktemp -d "${TMPDIR:-/tmp}/boxd-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/rd/bin" "$work/rd/dev" "$work/rd/proc" "$work/rd/sys"
cp /bin/busybox "$work/rd/bin/busybox"
cat >"$work/rd/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "--- guest output ---"
sh -c '$cmd'
echo "--- end (exit \$?) ---"
devmem 0xc0001000 32 1
INIT
chmod +x "$work/rd/init"
(cd "$work/rd" && find . | cpio -o -H newc --quiet >"$work/initramfs.cpio")

echo "demo: booting $kernel with 2 vCPUs and 256 MiB" >&2
exec bin/boxd nested --timeout 10m -- bin/boxd vmm --kernel "$kernel" --initrd "$work/initramfs.cpio" \
	--cpus 2 --mem-mib 256 --console - --timing
