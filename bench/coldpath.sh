#!/bin/sh
# Where a cold native buildroot's time goes, and what each cold-path lever
# of the native backend saves: BenchmarkColdLevers runs the backend's own
# mmdebstrap command for the Debian example with an empty download cache,
# then with one lever taken out at a time (and once with the download
# cache filled), and reports the total and the phases (update, download,
# extract, unpack, configure, triggers, other) of each run.
# Needs root, mmdebstrap and the Debian archive named in this machine's apt
# sources; takes the end-to-end lock (LOCK, default /tmp/cb-e2e.lock).
#
# Usage: bench/coldpath.sh [count] [variant regexp]   (median of count runs)
set -eu
cd "$(dirname "$0")/.."
count=${1:-2}
variant=${2:-}
export PATH="$PATH:/usr/local/go/bin"
go test -c -o /tmp/cb-coldlevers.test ./internal/buildroot/native
cd internal/buildroot/native
flock "${LOCK:-/tmp/cb-e2e.lock}" /tmp/cb-coldlevers.test -test.run '^$' -test.bench "ColdLevers/$variant" \
	-test.benchtime=1x -test.count="$count" -test.timeout 120m |
	awk '
	function median(list,   n, a, i, j, t) {
		n = split(list, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	/^BenchmarkColdLevers\// {
		name = $1; sub(/^BenchmarkColdLevers\//, "", name); sub(/-[0-9]+$/, "", name)
		if (!(name in seen)) { seen[name] = 1; order[++n] = name }
		v[name, "total"] = v[name, "total"] " " $3 / 1e9
		for (i = 5; i < NF; i += 2) { m = $(i + 1); sub(/-s$/, "", m); v[name, m] = v[name, m] " " $i; ms[m] = 1 }
		print; next
	}
	{ print }
	END {
		split("total update download extract unpack configure triggers other", cols, " ")
		printf "\nmedians, seconds\n%-24s", "variant"
		for (c = 1; c <= 8; c++) printf " %9s", cols[c]
		printf "\n"
		for (k = 1; k <= n; k++) {
			printf "%-24s", order[k]
			for (c = 1; c <= 8; c++) printf " %9.1f", ((order[k], cols[c]) in v) ? median(v[order[k], cols[c]]) : 0
			printf "\n"
		}
	}'
