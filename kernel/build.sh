#!/usr/bin/env bash
# Build (or find in the cache) boxd's guest kernel from Debian's linux-source-6.1.
#
#   kernel/build.sh               build if needed; last stdout line = path of vmlinux
#   kernel/build.sh --print-path  print that path without building (it may not exist)
#
# The cache key is the sha256 of a manifest naming everything that shapes the output:
# this script's version, the linux-source package version, the gcc version and the
# fragment's contents. Artifacts land in $BOXD_CACHE/kernel/<key>/ (vmlinux, bzImage,
# config, build.log, key.txt), installed with one rename so a reader never sees half of
# them. Builds hold an exclusive flock on $BOXD_CACHE/kernel, so concurrent runs wait
# for each other and the second one finds the first one's result.
#
# Progress goes to stderr (a line every ${BOXD_KERNEL_PROGRESS_SECONDS:-20}s); the full
# make log stays in the cache and its tail is printed on failure.
set -euo pipefail

# Bump when a change here changes what gets built.
readonly SCRIPT_VERSION=1
readonly SRC_PKG=linux-source-6.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=${BOXD_KERNEL_FRAGMENT:-$here/guest.config}
src_tar=${BOXD_KERNEL_SOURCE:-/usr/src/$SRC_PKG.tar.xz}
# HOME can be unset under init-like environments (the nested harness); fall back to
# the passwd entry rather than failing on `set -u`.
home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
cache=${BOXD_CACHE:-${XDG_CACHE_HOME:-$home/.cache}/boxd}/kernel
progress_every=${BOXD_KERNEL_PROGRESS_SECONDS:-20}

log() { printf 'kernel: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# manifest prints the text whose sha256 is the cache key; it is also saved as key.txt.
manifest() {
	local pkgver gccver
	pkgver=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null) ||
		die "$SRC_PKG is not installed (apt-get install $SRC_PKG)"
	[[ -n $pkgver ]] || die "$SRC_PKG is not installed (apt-get install $SRC_PKG)"
	gccver=$(gcc --version 2>/dev/null | head -n1) || die "gcc not found"
	[[ -r $fragment ]] || die "fragment $fragment not readable"
	printf 'boxd guest kernel\nscript %s\nsource %s %s\ngcc %s\nfragment:\n' \
		"$SCRIPT_VERSION" "$SRC_PKG" "$pkgver" "$gccver"
	cat "$fragment"
}

# verify_config FRAGMENT CONFIG lists every fragment option the final .config lost:
# tinyconfig + olddefconfig silently drop options whose dependencies are missing.
verify_config() {
	local frag=$1 config=$2 line name want got bad=0
	local -A seen=()
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		name=${line%%=*} want=${line#*=}
		if [[ -n ${seen[$name]:-} ]]; then
			log "duplicate: $name (merge_config keeps the last one)"
			bad=1
		fi
		seen[$name]=1
		got=$(grep -m1 -E "^$name=" "$config" | cut -d= -f2- || true)
		if [[ $want == n ]]; then
			[[ -z $got || $got == n ]] && continue
		elif [[ $got == "$want" ]]; then
			continue
		fi
		log "dropped: $name=$want (final .config: ${got:-not set})"
		bad=1
	done <"$frag"
	return "$bad"
}

# run_make DIR LOG ARGS... runs make, appending everything to LOG and printing a
# progress line every $progress_every seconds, so CI logs stay short.
run_make() {
	local dir=$1 logf=$2 start=$SECONDS last=$SECONDS n=0 line rc
	shift 2
	set +e
	make -C "$dir" "$@" 2>&1 | {
		while IFS= read -r line; do
			printf '%s\n' "$line" >>"$logf"
			n=$((n + 1))
			if ((SECONDS - last >= progress_every)); then
				last=$SECONDS
				log "$((SECONDS - start))s, $n log lines: ${line:0:100}"
			fi
		done
	}
	rc=${PIPESTATUS[0]}
	set -e
	if ((rc != 0)); then
		log "make $* failed (exit $rc); last lines of $logf:"
		tail -n 40 "$logf" >&2
		return 1
	fi
}

# prepare_tree prints the path of an extracted source tree for this package and gcc
# version, extracting it if needed. The tree is reused across fragments, so a small
# fragment change rebuilds only what it touches (kbuild tracks per-option dependencies).
prepare_tree() {
	local id=$1 tree=$cache/src/$1 tmp
	if [[ ! -f $tree/.boxd-extracted ]]; then
		[[ -r $src_tar ]] || die "$src_tar not found (apt-get install $SRC_PKG)"
		# Trees of other source/gcc versions are dead weight (~1.5 GB each).
		rm -rf "$cache/src"
		mkdir -p "$cache/src"
		tmp=$(mktemp -d "$cache/src/.extract.XXXXXX")
		log "extracting $src_tar"
		tar -xJf "$src_tar" -C "$tmp" --strip-components=1
		touch "$tmp/.boxd-extracted"
		chmod 755 "$tmp"
		mv -T "$tmp" "$tree"
	fi
	printf '%s\n' "$tree"
}

build() {
	local key=$1 keytext=$2 out=$cache/$1 tree tmp logf t0 tool
	for tool in make gcc flex bison bc lz4 perl tar xz; do
		command -v "$tool" >/dev/null ||
			die "$tool not found (apt-get install build-essential bc flex bison libelf-dev libssl-dev cpio lz4)"
	done
	t0=$SECONDS
	# The tree id ignores the fragment on purpose: one tree serves every fragment.
	tree=$(prepare_tree "$(printf '%s\n' "$keytext" | sed -n '2,4p' | sha256sum | cut -c1-16)")
	tmp=$(mktemp -d "$cache/.install.XXXXXX")
	logf=$tmp/build.log
	export KBUILD_BUILD_USER=boxd KBUILD_BUILD_HOST=boxd
	log "configuring (tinyconfig + $(basename "$fragment"))"
	run_make "$tree" "$logf" tinyconfig
	(cd "$tree" && ./scripts/kconfig/merge_config.sh -m .config "$fragment") >>"$logf" 2>&1 ||
		{ tail -n 40 "$logf" >&2; die "merge_config failed"; }
	run_make "$tree" "$logf" olddefconfig
	verify_config "$fragment" "$tree/.config" ||
		die "options of $fragment were dropped (missing dependencies?); fix the fragment"
	log "building vmlinux and bzImage with -j$(nproc) (full log: $logf)"
	run_make "$tree" "$logf" -j"$(nproc)" vmlinux bzImage
	cp "$tree/vmlinux" "$tmp/vmlinux"
	cp "$tree/arch/x86/boot/bzImage" "$tmp/bzImage"
	cp "$tree/.config" "$tmp/config"
	printf '%s\n' "$keytext" >"$tmp/key.txt"
	chmod 755 "$tmp"
	mv -T "$tmp" "$out"
	log "built in $((SECONDS - t0))s: vmlinux $(stat -c %s "$out/vmlinux") bytes, bzImage $(stat -c %s "$out/bzImage") bytes"
}

main() {
	local keytext key out
	keytext=$(manifest)
	key=$(printf '%s\n' "$keytext" | sha256sum | cut -d' ' -f1)
	out=$cache/$key
	case ${1:-} in
	--print-path)
		printf '%s\n' "$out/vmlinux"
		return
		;;
	"") ;;
	*) die "usage: $0 [--print-path]" ;;
	esac
	if [[ ! -f $out/vmlinux ]]; then
		mkdir -p "$cache"
		exec 9<"$cache"
		if ! flock -n 9; then
			log "another build holds $cache; waiting"
			flock 9
		fi
		# The other holder may have built this very key while we waited.
		if [[ ! -f $out/vmlinux ]]; then
			rm -rf "$cache"/.install.*
			build "$key" "$keytext"
		fi
	fi
	printf '%s\n' "$out/vmlinux"
}

main "$@"
