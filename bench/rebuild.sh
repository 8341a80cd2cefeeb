#!/usr/bin/env bash
# Warm rebuild of the Debian example through the whole system, against a
# plain dpkg-buildpackage in an already prepared chroot:
#   (c) cb-ctl --build-package --wait: request -> "package build succeeded",
#       broker, scheduler, job, cached buildroot overlay, sandboxed build,
#       result file and responses included (the collector upload is not)
#   (d) chroot <prepared root> dpkg-buildpackage -us -uc -b
# Goal: (c)/(d) <= 1.2. Prints every run and the medians.
#
# Usage: bench/rebuild.sh [runs]   (root; uses /var/cache/cb-bench/buildroot)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
export PATH="$PATH:/usr/local/go/bin"
make build >/dev/null
top=$PWD
work=$(mktemp -d /tmp/cb-bench-rebuild.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
git init -q --bare "$work/origin.git"
git init -q "$work/src"
cp -a examples/projects "$work/src/"
git -C "$work/src" -c user.name=bench -c user.email=bench@localhost add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@localhost commit -qm examples
git -C "$work/src" push -q "$work/origin.git" HEAD:main
git clone -q --branch main "$work/origin.git" "$work/sources"
printf 'broker:\n  host: 127.0.0.1:%s\nrunner:\n  group: debian\nthis_host: 127.0.0.1\n' "$port" >"$work/broker.yml"
export CB_BROKER_CONFIG=$work/broker.yml CB_CTL_CONFIG=$work/cbctl.yml

bin/cb broker --listen "127.0.0.1:$port" --data-dir "$work/broker" --runner-group debian >"$work/broker.log" 2>&1 &
pids+=($!)
bin/cb-scheduler --runner-root "$work/runner" --sources "$work/sources" --runner-group debian \
	--cache-dir /var/cache/cb-bench/buildroot --poll-timeout 500 >"$work/scheduler.log" 2>&1 &
pids+=($!)
sleep 3

build() { bin/cb-ctl --build-package cb-hello --project-path Debian --arch x86_64 --dist bookworm --wait --timeout 900 >/dev/null 2>"$work/ctl.err"; }
now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "warming the buildroot cache (first build, not timed)"
build || { cat "$work/ctl.err" "$work/scheduler.log"; exit 1; }

: >"$work/c"
for i in $(seq "$runs"); do
	t0=$(now); build; t1=$(now)
	echo "$t1 - $t0" | bc | tee -a "$work/c" | sed 's/^/(c) cb-ctl --wait warm rebuild: /'
done

lower=$(sed -n 's/.*"lower": *"\([^"]*\)".*/\1/p' "$work/runner/projects/Debian/cb-hello@bookworm.x86_64.work/layout.json")
root=$work/chroot
cp -a "$lower" "$root"
: >"$work/d"
for i in $(seq "$runs"); do
	rm -rf "$root/cb-hello" "$root"/*.deb "$root"/*.changes "$root"/*.buildinfo
	cp -a "$top/examples/projects/Debian/cb-hello" "$root/cb-hello"
	t0=$(now)
	chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		sh -c 'cd /cb-hello && dpkg-buildpackage -us -uc -b' >"$work/d.log" 2>&1
	t1=$(now)
	echo "$t1 - $t0" | bc | tee -a "$work/d" | sed 's/^/(d) plain dpkg-buildpackage in a chroot: /'
done
c=$(median <"$work/c"); d=$(median <"$work/d")
echo "median (c) = ${c}s, (d) = ${d}s, (c)/(d) = $(echo "scale=2; $c / $d" | bc)"
