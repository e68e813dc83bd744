#!/usr/bin/env bash
# Build (or find in the cache) boxd's default root filesystem: Debian (minbase plus
# a few tools) from debootstrap, in a sparse ext4 image.
#
#   image/build.sh               build if needed; last stdout line = path of rootfs.ext4
#   image/build.sh --print-path  print that path without building (it may not exist)
#
# The image holds Debian only: boxd's init, agent and in-guest CLI come from the
# initramfs, which mounts this disk and switches root onto it while staying PID 1.
#
# The cache key is the sha256 of a manifest of everything that shapes the image: this
# script's version, the Debian release, the package list, the image size and the
# architecture. (Not the mirror: any mirror of the release gives the same system.)
# Artifacts land in $BOXD_CACHE/image/<key>/ (rootfs.ext4, build.log, key.txt),
# installed with one rename. Builds hold an exclusive flock on $BOXD_CACHE/image.
#
# Environment:
#   BOXD_IMAGE_SIZE      image size for truncate(1) (default 2G; the file is sparse,
#                        and the daemon grows per-VM copies)
#   BOXD_IMAGE_PACKAGES  comma-separated packages on top of minbase (default below)
#   BOXD_IMAGE_MIRROR    Debian mirror (default: the one apt uses on this host)
#   BOXD_CACHE           cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/boxd)
#
# Progress goes to stderr: one line per stage with the elapsed time, and
# debootstrap's output summarised as one line per phase (a line every 15 s in long
# phases); its full output stays in build.log and its tail is printed on failure.
set -euo pipefail

# Bump when a change here changes what gets built.
readonly SCRIPT_VERSION=1
readonly RELEASE=bookworm
readonly DEFAULT_PACKAGES=bash,coreutils,apt,ca-certificates,iproute2,curl,git,python3,procps,util-linux

packages=${BOXD_IMAGE_PACKAGES:-$DEFAULT_PACKAGES}
size=${BOXD_IMAGE_SIZE:-2G}
cache=${BOXD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boxd}/image
t0=$SECONDS

log() { printf 'image: [%3ds] %s\n' "$((SECONDS - t0))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# manifest prints the text whose sha256 is the cache key; it is also saved as key.txt.
manifest() {
	[[ $packages =~ ^[a-z0-9][a-z0-9+.,-]*$ ]] || die "BOXD_IMAGE_PACKAGES=$packages: want a comma-separated package list"
	[[ $size =~ ^[0-9]+[KMGT]?$ ]] || die "BOXD_IMAGE_SIZE=$size: want a size such as 2G"
	printf 'boxd root image\nscript %s\nrelease %s\narch %s\nsize %s\npackages %s\n' \
		"$SCRIPT_VERSION" "$RELEASE" "$(dpkg --print-architecture 2>/dev/null || uname -m)" "$size" \
		"$(tr ',' '\n' <<<"$packages" | sort -u | paste -sd, -)"
}

# mirror prints the Debian mirror apt uses here for $RELEASE: deb822 .sources files
# first, then one-line sources.list entries.
mirror() {
	if [[ -n ${BOXD_IMAGE_MIRROR:-} ]]; then
		printf '%s\n' "$BOXD_IMAGE_MIRROR"
		return
	fi
	local f uri
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		uri=$(awk -v rel="$RELEASE" '
			/^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
			/^URIs:/ { u = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == rel) s = 1 }
			END { if (u != "" && s) print u }' "$f" | head -n1)
		if [[ -n $uri ]]; then
			printf '%s\n' "$uri"
			return
		fi
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		uri=$(awk -v rel="$RELEASE" '$1 == "deb" && $0 !~ /\[/ && $3 == rel { print $2; exit }' "$f")
		if [[ -n $uri ]]; then
			printf '%s\n' "$uri"
			return
		fi
	done
	printf '%s\n' http://deb.debian.org/debian
}

# summarise reads debootstrap's output, appends it to $1 and prints one line per
# phase (Retrieving, Validating, Extracting, Unpacking, Configuring...).
summarise() {
	local logf=$1 line phase="" n=0 last=$SECONDS verb
	while IFS= read -r line; do
		printf '%s\n' "$line" >>"$logf"
		[[ $line =~ ^([IWE]):\ ([A-Za-z]+) ]] || continue
		if [[ ${BASH_REMATCH[1]} != I ]]; then
			log "debootstrap: $line"
			continue
		fi
		verb=${BASH_REMATCH[2]}
		# Each download is "Retrieving X" then "Validating X": one phase.
		[[ $verb == Validating ]] && verb=Retrieving
		if [[ $verb != "$phase" ]]; then
			((n > 1)) && log "debootstrap: ${phase,,} done ($n items)"
			phase=$verb n=0 last=$SECONDS
			log "debootstrap: ${line#I: }"
		fi
		n=$((n + 1))
		if ((SECONDS - last >= 15)); then
			last=$SECONDS
			log "debootstrap: ${phase,,}: $n so far (${line#I: })"
		fi
	done
	((n > 1)) && log "debootstrap: ${phase,,} done ($n items)"
	return 0
}

# customise trims and prepares the tree for boxd's init.
customise() {
	local root=$1
	# boxd's init writes resolv.conf and sets the hostname at every boot.
	rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
	printf '# boxd: the root disk is mounted by boxd init (boxd.root= on the kernel command line)\n' >"$root/etc/fstab"
	# An empty machine-id is filled in at first boot by whoever needs one;
	# a fixed one would be shared by every VM.
	: >"$root/etc/machine-id"
	# Package caches: a guest runs apt-get update before installing.
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
	mkdir -p "$root/run" "$root/tmp" "$root/dev" "$root/proc" "$root/sys"
	chmod 1777 "$root/tmp"
	printf 'boxd root image\n%s\n' "$2" >"$root/etc/boxd-image"
}

build() {
	local key=$1 keytext=$2 out=$cache/$1 tmp logf tree img m tool
	for tool in debootstrap mkfs.ext4 truncate; do
		command -v "$tool" >/dev/null || die "$tool not found (make deps: apt-get install debootstrap e2fsprogs)"
	done
	((EUID == 0)) || die "debootstrap needs root"
	m=$(mirror)
	tmp=$(mktemp -d "$cache/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	logf=$tmp/build.log tree=$tmp/tree img=$tmp/rootfs.ext4
	log "debootstrap $RELEASE (minbase + $packages) from $m"
	set +e
	debootstrap --variant=minbase --include="$packages" "$RELEASE" "$tree" "$m" 2>&1 | summarise "$logf"
	local rc=${PIPESTATUS[0]}
	set -e
	if ((rc != 0)); then
		log "debootstrap failed (exit $rc); last lines of its output:"
		tail -n 30 "$logf" >&2
		[[ -r $tree/debootstrap/debootstrap.log ]] && tail -n 20 "$tree/debootstrap/debootstrap.log" >&2
		exit 1
	fi
	customise "$tree" "$keytext"
	log "tree is $(du -sh "$tree" | cut -f1); making a $size ext4 image"
	truncate -s "$size" "$img"
	# -m 0: no blocks reserved for root, the guest's root is the only user.
	mkfs.ext4 -q -F -L boxd-root -m 0 -d "$tree" "$img" >>"$logf" 2>&1 ||
		{ tail -n 20 "$logf" >&2; die "mkfs.ext4 failed"; }
	printf '%s\n' "$keytext" >"$tmp/key.txt"
	rm -rf "$tree"
	chmod 755 "$tmp"
	mv -T "$tmp" "$out"
	trap - EXIT
	log "built $out/rootfs.ext4: $(du -h --apparent-size "$out/rootfs.ext4" | cut -f1) apparent, $(du -h "$out/rootfs.ext4" | cut -f1) used"
}

main() {
	local keytext key out
	keytext=$(manifest)
	key=$(printf '%s\n' "$keytext" | sha256sum | cut -d' ' -f1)
	out=$cache/$key
	case ${1:-} in
	--print-path)
		printf '%s\n' "$out/rootfs.ext4"
		return
		;;
	"") ;;
	*) die "usage: $0 [--print-path]" ;;
	esac
	if [[ ! -f $out/rootfs.ext4 ]]; then
		mkdir -p "$cache"
		exec 9<"$cache"
		if ! flock -n 9; then
			log "another build holds $cache; waiting"
			flock 9
		fi
		# The other holder may have built this very key while we waited.
		if [[ ! -f $out/rootfs.ext4 ]]; then
			rm -rf "$cache"/.build.*
			build "$key" "$keytext"
		fi
	else
		log "cached"
	fi
	printf '%s\n' "$out/rootfs.ext4"
}

main "$@"
