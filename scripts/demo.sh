#!/usr/bin/env bash
# The README's first command (after make builds everything): start the boxd
# daemon, create a VM from the Debian image, run a command in it, print its
# output, destroy the VM. On hosts without VT-x/AMD-V all of it runs inside the
# nested harness (boxd nested), where /dev/kvm is real.
#
# Usage: scripts/demo.sh [COMMAND]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${BOXD_DEMO_INSIDE:-}" != 1 ]; then
	# On the host: find the built artefacts, then run the rest where KVM works.
	BOXD_DEMO_KERNEL=$(bash kernel/build.sh --print-path)
	BOXD_DEMO_INITRAMFS=$(go run ./guest-init/cmd/mkinitramfs --init out/guest/init --boxd out/guest/boxd | tail -1)
	BOXD_DEMO_IMAGE=$(bash image/build.sh --print-path | tail -1)
	export BOXD_DEMO_KERNEL BOXD_DEMO_INITRAMFS BOXD_DEMO_IMAGE BOXD_DEMO_INSIDE=1
	exec bin/boxd nested --timeout 20m -- bash scripts/demo.sh "$@"
fi

cmd=${1:-'python3 -c "import os, platform; print(\"hello from\", platform.node(), \"running Linux\", platform.release(), \"on\", os.cpu_count(), \"vCPUs\")"'}
state=$(mktemp -d "${TMPDIR:-/tmp}/boxd-demo.XXXXXX")
sock=$state/boxd.sock
boxd() { bin/boxd "$1" --socket "$sock" "${@:2}"; }

bin/boxd daemon --state-dir "$state" --socket "$sock" --kernel "$BOXD_DEMO_KERNEL" \
	--initramfs "$BOXD_DEMO_INITRAMFS" --image "$BOXD_DEMO_IMAGE" --boot-timeout 5m \
	>"$state/ready.json" 2>"$state/daemon.log" &
daemon=$!
trap 'boxd destroy --all >/dev/null 2>&1 || true; kill $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true' EXIT
# The daemon prints its ready document once it serves.
for _ in $(seq 300); do [ -s "$state/ready.json" ] && break; kill -0 $daemon || { cat "$state/daemon.log"; exit 1; }; sleep 0.1; done

echo "demo: boxd new --name=demo"
boxd new --name=demo --cpus 2 --mem 1G --disk 8G
echo "demo: boxd exec demo '$cmd'"
boxd exec demo "$cmd"
echo "demo: boxd ls"
boxd ls
boxd destroy demo
