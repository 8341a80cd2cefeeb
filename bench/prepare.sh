#!/bin/sh
# Times buildroot creation for the Debian example (examples/projects/Debian/cb-hello):
#   ColdPrepare/kiwi                   kiwi-ng system prepare, empty caches
#   ColdPrepare/native                 mmdebstrap, empty caches
#   ColdPrepareWarmDownloads/{kiwi,native}  fresh root, packages downloaded before
#   WarmPrepare                        cache hit (what a rebuild pays before compiling)
# Needs root, kiwi-ng, debootstrap and mmdebstrap, and network access to the
# Debian archive named in this machine's apt sources.
#
# Usage: bench/prepare.sh [go test -bench regexp] [count]
set -eu
cd "$(dirname "$0")/.."
pattern=${1:-'ColdPrepare|WarmPrepare'}
count=${2:-1}
export PATH="$PATH:/usr/local/go/bin"
go test -run '^$' -bench "$pattern" -benchtime=1x -count="$count" -timeout 120m ./internal/buildroot |
	awk '/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name); t = $3 / 1e9
		printf "%-48s %9.2f s\n", name, t
		sum[name] += t; n[name]++
		next
	}
	{ print }
	END {
		for (kind in sum) if (kind ~ /\/kiwi$/) {
			native = kind; sub(/kiwi$/, "native", native)
			if (n[native] > 0)
				printf "%-48s %9.2fx\n", "speed-up native over kiwi (" kind ")", (sum[kind] / n[kind]) / (sum[native] / n[native])
		}
	}'
