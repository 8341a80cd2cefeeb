#!/usr/bin/env bash
# Side-by-side benchmark of Debian package builds: Cloud Builder against
# plain dpkg-buildpackage (the floor), sbuild and pbuilder, on real Debian
# source packages fetched with `apt-get source` at run time. All numbers
# are medians of RUNS runs, measured in one run of this script:
#
#   floor  dpkg-buildpackage -us -uc -b in a prepared chroot (the package's
#          own buildroot with its build deps installed, as an overlay)
#   (a)    first build of a package new to the runner, whose base is cached
#          and whose .debs are in the download cache: cb-ctl --build-package
#          --wait, request -> "package build succeeded" (the buildroot cache
#          entries the build added are removed before each run; with
#          layered buildroots that is the package's own layer)
#   (b)    warm rebuild of the same package, through the same path
#   (c)    fully cold buildroot of the Debian example's description, native
#          (mmdebstrap) against kiwi-ng system prepare, empty caches
#          (BenchmarkColdPrepare of internal/buildroot)
#   (d)    the same .dsc through sbuild --chroot-mode=unshare and pbuilder,
#          each from a base made once (sbuild: an mmdebstrap buildd tarball,
#          pbuilder: pbuilder create); both install the build deps per build
#   (e)    SMALL packages' first builds one after another on one runner
#          (new to the runner, .debs not downloaded before), against the
#          sum of sbuild's times for the same packages
#
# The source packages come from deb-src lines derived from this machine's
# apt sources (same archive, deb -> deb-src), kept in a private apt state
# directory: the system's apt configuration is not changed. sbuild, pbuilder
# and uidmap are installed if missing; sbuild runs as the system user
# cb-bench (created if missing, with its own subordinate id range), since
# sbuild's unshare mode runs as a user with a /etc/subuid entry.
#
# Fetching and setting up run without it; the measured part runs under the
# machine-wide lock LOCK (default /tmp/cb-e2e.lock).
#
# Usage: bench/compare.sh [--quick]     (root)
#   --quick            one package, one run, two packages for (e)
#   RUNS=3             runs per measurement
#   PACKAGES="hello nano"  source packages for floor, (a), (b), (d)
#   SMALL="..."        source packages for (e) (20 by default)
#   PARTS="floor a b c d e"  what to measure
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
export PATH="$PATH:/usr/local/go/bin"
export LC_ALL=C.UTF-8

quick=0
[ "${1:-}" = --quick ] && quick=1
runs=${RUNS:-3}
read -r -a packages <<<"${PACKAGES:-hello nano}"
read -r -a small <<<"${SMALL:-hello tree sl figlet pv dtach pwgen apg sipcalc cowsay tofrodos dos2unix rig beep fdupes units ed bc diffstat sharutils}"
if [ "$quick" = 1 ]; then
	runs=1
	read -r -a packages <<<"${PACKAGES:-hello}"
	read -r -a small <<<"${SMALL:-hello tree}"
fi
parts=" ${PARTS:-floor a b c d e} "
lock=${LOCK:-/tmp/cb-e2e.lock}
dist=bookworm arch=x86_64 darch=amd64
has() { [[ $parts == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || { echo "compare.sh: needs root" >&2; exit 1; }

work=$(mktemp -d /var/tmp/cb-bench-compare.XXXXXX)
# sbuild's user must reach its build directory below it
chmod 711 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# timed FILE CMD...: runs CMD, appends its seconds to FILE; fails with CMD
timed() {
	local f=$1 t0 t1
	shift
	t0=$(now)
	"$@" || return
	t1=$(now)
	echo "$t1 - $t0" | bc | tee -a "$f" >&2
}

## setup (no lock) ##########################################################

missing=()
for p in sbuild pbuilder uidmap dpkg-dev bc; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi
make build >/dev/null

# The Debian archive this machine's apt uses (never written into a file of
# the project): the origin of bookworm/main.
mirror=$(apt-cache policy | awk -v d="$dist/main $darch Packages" '$0 ~ d { print $2; exit }')
[ -n "$mirror" ] || { echo "compare.sh: no $dist/main archive in the apt sources" >&2; exit 1; }

# deb-src lines from the deb lines of the apt sources, in a private state.
apt=$work/apt
mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/cache/archives/partial"
: >"$apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
	[ -f "$f" ] && sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >>"$apt/sources.list"
done
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" >"$apt/sources.list.d/$(basename "$f")"
done
aptopts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
	-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
log "apt-get update (deb-src)"
apt-get "${aptopts[@]}" update -qq

# fetch PKG: .dsc and unpacked tree in $work/dl/PKG/
fetch() {
	local d=$work/dl/$1
	[ -d "$d" ] && return
	mkdir -p "$d"
	(cd "$d" && apt-get "${aptopts[@]}" source -qq --only-source "$1" >/dev/null 2>"$d.err") ||
		{ cat "$d.err" >&2; return 1; }
}
dsc() { ls "$work/dl/$1/"*.dsc | head -1; }
srcdir() { find "$work/dl/$1" -mindepth 1 -maxdepth 1 -type d | head -1; }

all=("${packages[@]}")
has e && all+=("${small[@]}")
declare -A skip=()
for p in "${all[@]}"; do
	log "apt-get source $p"
	fetch "$p" || { log "cannot fetch $p: left out"; skip[$p]=1; }
done

# A git repository with the example (to warm the base) and every package
# under projects/Bench/<name>, with the example's buildroot description.
git init -q --bare "$work/origin.git"
git init -q "$work/src"
mkdir -p "$work/src/projects/Bench"
cp -a examples/projects/Debian "$work/src/projects/"
for p in "${all[@]}"; do
	[ -n "${skip[$p]:-}" ] && continue
	d=$work/src/projects/Bench/$p
	[ -d "$d" ] && continue
	cp -a "$(srcdir "$p")" "$d"
	mkdir -p "$d/.cb"
	cp examples/projects/Debian/cb-hello/.cb/build_root.kiwi "$d/.cb/"
	printf 'schema_version: 0.1\nname: %s\ndistributions:\n  - dist: %s\n    arch: %s\n    runner_group: debian\n' "$p" "$dist" "$arch" >"$d/.cb/cloud_builder.yml"
done
git -C "$work/src" -c user.name=bench -c user.email=bench@localhost add -A -f
git -C "$work/src" -c user.name=bench -c user.email=bench@localhost commit -qm sources
git -C "$work/src" push -q "$work/origin.git" HEAD:main
git clone -q --branch main "$work/origin.git" "$work/sources"

# sbuild runs as cb-bench with a subordinate id range of its own.
bhome=/var/lib/cb-bench
if has d || has e; then
	if ! getent passwd cb-bench >/dev/null; then
		useradd --system --home-dir "$bhome" --create-home --shell /usr/sbin/nologin cb-bench
	fi
	usermod -a -G sbuild cb-bench
	for f in /etc/subuid /etc/subgid; do
		grep -q '^cb-bench:' "$f" || echo 'cb-bench:1000000:65536' >>"$f"
	done
	mkdir -p "$bhome/.cache/sbuild" "$work/sbuild"
	chown cb-bench: "$bhome/.cache" "$bhome/.cache/sbuild" "$work/sbuild"
fi
sbuild_tar=$bhome/.cache/sbuild/$dist-$darch.tar
pbuilder_base=/var/cache/cb-bench/pbuilder/$dist-base.tgz

## measured part (under the lock) ###########################################

exec 9>"$lock"
log "waiting for $lock"
flock 9
log "holding $lock"

if { has d || has e; } && [ ! -s "$sbuild_tar" ]; then
	log "creating sbuild's base $sbuild_tar (once)"
	mmdebstrap --mode=root --variant=buildd --format=tar "$dist" "$sbuild_tar.tmp" "deb $mirror $dist main" >"$work/sbuild-base.log" 2>&1 ||
		{ cat "$work/sbuild-base.log" >&2; exit 1; }
	chown cb-bench: "$sbuild_tar.tmp"
	mv "$sbuild_tar.tmp" "$sbuild_tar"
fi
if has d && [ ! -s "$pbuilder_base" ]; then
	log "creating pbuilder's base $pbuilder_base (once)"
	mkdir -p "$(dirname "$pbuilder_base")"
	pbuilder create --basetgz "$pbuilder_base.tmp" --distribution "$dist" --mirror "$mirror" >"$work/pbuilder-base.log" 2>&1 ||
		{ tail -50 "$work/pbuilder-base.log" >&2; exit 1; }
	mv "$pbuilder_base.tmp" "$pbuilder_base"
fi

# The system: broker and scheduler (one runner) with a buildroot cache of
# this run's own. They must not inherit the lock's descriptor.
port=$((20000 + RANDOM % 20000))
printf 'broker:\n  host: 127.0.0.1:%s\nrunner:\n  group: debian\nthis_host: 127.0.0.1\n' "$port" >"$work/broker.yml"
export CB_BROKER_CONFIG=$work/broker.yml CB_CTL_CONFIG=$work/cbctl.yml
cache=$work/cache
bin/cb broker --listen "127.0.0.1:$port" --data-dir "$work/broker" --runner-group debian >"$work/broker.log" 2>&1 9>&- &
pids+=($!)
bin/cb-scheduler --runner-root "$work/runner" --sources "$work/sources" --runner-group debian \
	--cache-dir "$cache" --poll-timeout 500 >"$work/scheduler.log" 2>&1 9>&- &
pids+=($!)
sleep 3

# cb PROJECT NAME: one build through the whole system
cb() {
	bin/cb-ctl --build-package "$2" --project-path "$1" --arch "$arch" --dist "$dist" --wait --timeout 3600 >"$work/ctl.out" 2>"$work/ctl.err" || {
		log "cb build of $2 failed"
		cat "$work/ctl.err" >&2
		tail -30 "$work/runner/projects/$1/$2@$dist.$arch.build.log" "$work/runner/projects/$1/$2@$dist.$arch.prepare.log" >&2 2>/dev/null || true
		return 1
	}
}
# Buildroot cache entries (roots or layers, named by their 64-hex key).
entries() { find "$cache" -mindepth 1 -maxdepth 2 -type d -regextype egrep -regex '.*/[0-9a-f]{64}' 2>/dev/null | sort; }
# forget BEFORE: removes the cache entries added since the listing BEFORE.
forget() { comm -13 "$1" <(entries) | while read -r d; do rm -rf "$d"; done; }

log "warming the base: first build of the Debian example (not timed)"
cb Debian cb-hello
entries >"$work/base-entries"

# floor PKG: dpkg-buildpackage in the package's prepared root, an overlay
# of its cached buildroot in a private mount namespace (gone with it).
floor() {
	local p=$1 lower
	lower=$(sed -n 's/.*"lower": *"\([^"]*\)".*/\1/p' "$work/runner/projects/Bench/$p@$dist.$arch.work/layout.json")
	[ -n "$lower" ] || { log "no layout for $p"; return 1; }
	rm -rf "$work/floor"
	mkdir -p "$work/floor/upper" "$work/floor/work" "$work/floor/root"
	unshare --mount --propagation private --pid --fork sh -ec '
		mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$2/root"
		mount --rbind /dev "$2/root/dev"
		mount -t proc proc "$2/root/proc"
		rm -rf "$2/root/build"
		mkdir -p "$2/root/build"
		cp -a "$3" "$2/root/build/src"
		t0=$(date +%s.%N)
		chroot "$2/root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
			sh -c "cd /build/src && dpkg-buildpackage -us -uc -b" >"$2/build.log" 2>&1 || { tail -30 "$2/build.log" >&2; exit 1; }
		t1=$(date +%s.%N)
		echo "$t1 - $t0" | bc >"$2/seconds"
	' floor "$lower" "$work/floor" "$(srcdir "$p")" || return
	cat "$work/floor/seconds"
}

# sbuild_run PKG: one sbuild --chroot-mode=unshare build of the .dsc
sbuild_run() {
	local d=$work/sbuild/$1
	rm -rf "$d"
	mkdir -p "$d"
	find "$work/dl/$1" -maxdepth 1 -type f -exec cp {} "$d/" \;
	chown -R cb-bench: "$d"
	(cd "$d" && runuser -u cb-bench -- env HOME="$bhome" sbuild --chroot-mode=unshare -d "$dist" --arch="$darch" \
		--arch-all --no-run-lintian --no-run-piuparts --no-run-autopkgtest --nolog "$(basename "$(dsc "$1")")" \
		>"$d.log" 2>&1 9>&-) || { log "sbuild of $1 failed"; tail -30 "$d.log" >&2; return 1; }
}
pbuilder_run() {
	rm -rf "$work/pbuilder"
	mkdir -p "$work/pbuilder"
	pbuilder build --basetgz "$pbuilder_base" --buildresult "$work/pbuilder" --debbuildopts -b "$(dsc "$1")" \
		>"$work/pbuilder.log" 2>&1 9>&- || { log "pbuilder of $1 failed"; tail -30 "$work/pbuilder.log" >&2; return 1; }
}

declare -A res=()
for p in "${packages[@]}"; do
	[ -n "${skip[$p]:-}" ] && continue
	r=$work/r-$p
	mkdir -p "$r"
	touch "$r/floor" "$r/a" "$r/b" "$r/sbuild" "$r/pbuilder"
	if has a || has b || has floor; then
		before=$work/before-$p
		entries >"$before"
		log "$p: first build, priming the download cache (not timed)"
		cb Bench "$p"
		for i in $(seq "$runs"); do
			if has a; then
				forget "$before"
				log "$p: (a) first build on a cached base, run $i"
				timed "$r/a" cb Bench "$p"
			fi
		done
	fi
	if has b; then
		for i in $(seq "$runs"); do
			log "$p: (b) warm rebuild, run $i"
			timed "$r/b" cb Bench "$p"
		done
	fi
	if has floor; then
		for i in $(seq "$runs"); do
			log "$p: floor, run $i"
			floor "$p" | tee -a "$r/floor" >&2
		done
	fi
	if has d; then
		for i in $(seq "$runs"); do
			log "$p: sbuild, run $i"
			timed "$r/sbuild" sbuild_run "$p" || true
			log "$p: pbuilder, run $i"
			timed "$r/pbuilder" pbuilder_run "$p" || true
		done
	fi
	for m in floor a b sbuild pbuilder; do res[$p.$m]=$(median <"$r/$m"); done
done

if has c; then
	log "(c) cold native against kiwi, $runs run(s) each"
	go test -run '^$' -bench 'ColdPrepare$' -benchtime=1x -count="$runs" -timeout 180m ./internal/buildroot 2>&1 9>&- |
		tee "$work/c.log" | grep '^Benchmark' >&2 || true
	for b in kiwi native; do
		res[c.$b]=$(awk -v b="BenchmarkColdPrepare/$b" 'index($1, b) == 1 { print $3 / 1e9 }' "$work/c.log" | median)
	done
fi

if has e; then
	: >"$work/e-cb"
	: >"$work/e-sbuild"
	n=0
	# What the earlier parts added goes; the base stays.
	forget "$work/base-entries"
	for p in "${small[@]}"; do
		[ -n "${skip[$p]:-}" ] && continue
		log "(e) $p: first build through cb"
		t0=$(now)
		if ! cb Bench "$p"; then log "(e) $p left out"; continue; fi
		tc=$(echo "$(now) - $t0" | bc)
		log "(e) $p: sbuild"
		t0=$(now)
		if ! sbuild_run "$p"; then log "(e) $p left out"; continue; fi
		ts=$(echo "$(now) - $t0" | bc)
		echo "$tc" >>"$work/e-cb"
		echo "$ts" >>"$work/e-sbuild"
		n=$((n + 1))
		log "(e) $p: cb ${tc}s, sbuild ${ts}s"
	done
	res[e.n]=$n
	res[e.cb]=$(awk '{ s += $1 } END { print s + 0 }' "$work/e-cb")
	res[e.sbuild]=$(awk '{ s += $1 } END { print s + 0 }' "$work/e-sbuild")
fi
flock -u 9

## table #####################################################################

num() { awk -v a="$1" 'BEGIN { if (a == "nan" || a == "") print "-"; else printf "%.1f", a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
echo
echo "bench/compare.sh: medians of $runs run(s), seconds; mirror from apt sources; $(nproc) CPUs"
for p in "${packages[@]}"; do
	[ -n "${skip[$p]:-}" ] && continue
	f=${res[$p.floor]}
	echo
	printf '%-12s %-46s %9s %8s %9s %10s\n' "$p" "" seconds "/floor" "/sbuild" "/pbuilder"
	for m in floor a b sbuild pbuilder; do
		case $m in
		floor) name="floor: dpkg-buildpackage -b, prepared chroot" ;;
		a) name="(a) first build, cached base (cb-ctl --wait)" ;;
		b) name="(b) warm rebuild (cb-ctl --wait)" ;;
		sbuild) name="(d) sbuild --chroot-mode=unshare" ;;
		pbuilder) name="(d) pbuilder" ;;
		esac
		v=${res[$p.$m]}
		printf '%-12s %-46s %9s %8s %9s %10s\n' "" "$name" "$(num "$v")" "$(ratio "$v" "$f")" \
			"$(ratio "$v" "${res[$p.sbuild]}")" "$(ratio "$v" "${res[$p.pbuilder]}")"
	done
done
if has c; then
	echo
	printf '%-59s %9s\n' "(c) cold buildroot, Debian example: kiwi-ng system prepare" "$(num "${res[c.kiwi]}")"
	printf '%-59s %9s\n' "(c) cold buildroot, Debian example: native (mmdebstrap)" "$(num "${res[c.native]}")"
	printf '%-59s %9s\n' "(c) kiwi / native" "$(ratio "${res[c.kiwi]}" "${res[c.native]}")"
fi
if has e; then
	echo
	printf '%-59s %9s\n' "(e) ${res[e.n]} first builds one after another, cb total" "$(num "${res[e.cb]}")"
	printf '%-59s %9s\n' "(e) the same through sbuild, sum" "$(num "${res[e.sbuild]}")"
	printf '%-59s %9s\n' "(e) cb / sbuild" "$(ratio "${res[e.cb]}" "${res[e.sbuild]}")"
fi
