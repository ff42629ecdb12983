#!/bin/bash
# User-space instructions per echo request in the server thread, counted by callgrind: a
# figure that, unlike CPU time, does not move with the machine's load.
#
# Three runs, 16 connections each (or the second argument: with 1 connection every request
# is one loop turn and the count repeats to the instruction, the steadiest A/B figure):
#  1. coring-bench's echo server, fallback backend (the figure tracked since 2026-11-28);
#  2. and 3. the vs_tokio bench's coring (fallback) and tokio current_thread servers, the
#     same harness and the same tokio client for both, so their ratio compares the two
#     runtimes' user-space cost per request (kernel work is not counted).
# Every one of these servers is the harness's echo server (`coring_bench::echo::server::serve`,
# written once for every runtime), which is how the server thread's profile is found.
# The fallback backend only: valgrind does not run io_uring's shared rings. The layers
# above the backend (tasks, ops, the driver's table) are the same code on both backends.
#
# usage: bench/scripts/callgrind-echo.sh [secs] [conns]   (from the workspace root; needs valgrind)
set -euo pipefail
secs=${1:-3}
conns=${2:-16}
cargo build --release -q -p coring-bench
vs_tokio=$(cargo bench -p coring-bench --bench vs_tokio --no-run 2>&1 \
    | grep -o 'target/release/deps/vs_tokio-[0-9a-f]*' | head -1)
[[ -x $vs_tokio ]] || { echo "callgrind-echo: could not build the vs_tokio bench" >&2; exit 1; }
# The function every echo server thread runs (and no client thread does).
server=coring_bench::echo::server::serve
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# per_request NAME PREFIX FUNCTION: total instructions of the thread whose profile runs
# FUNCTION, divided by its calls of `ServerStats::echoed` (one per echoed request, whatever
# the runtime's send path: coring sends through a raw syscall, tokio through libc's send).
per_request() {
    local name=$1 prefix=$2 func=$3 f inclusive total callers sends found=0
    for f in "$prefix"-*; do
        inclusive=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null)
        [[ $inclusive == *"$func"* ]] || continue
        total=$(callgrind_annotate "$f" 2>/dev/null \
            | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        callers=$(callgrind_annotate --threshold=100 --tree=caller "$f" 2>/dev/null)
        sends=$(grep -B1 '\*.*ServerStats::echoed ' <<<"$callers" | head -1 \
            | sed -E 's/.*\(([0-9,]+)x\).*/\1/' | tr -d ,)
        if [[ -z $sends || $sends == 0 ]]; then
            echo "callgrind-echo: $name: no ServerStats::echoed calls found" >&2
            exit 1
        fi
        printf '%-38s %12d instructions %8d requests %6d per request\n' \
            "$name" "$total" "$sends" "$((total / sends))"
        echo "$((total / sends))" >"$out/$name.per"
        found=1
    done
    [[ $found == 1 ]] || { echo "callgrind-echo: $name: no thread ran $func" >&2; exit 1; }
}

valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/bench.out" \
    target/release/coring-bench echo --backend fallback --client-backend fallback \
    --secs "$secs" --warmup 1 --conns "$conns" --no-progress >/dev/null 2>"$out/valgrind.log"
per_request "coring-bench echo, fallback" "$out/bench.out" "$server"

valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/coring.out" \
    "$vs_tokio" --only echo --backends fallback --no-tokio --reps 1 --secs "$secs" \
    --warmup 1 --conns "$conns" >/dev/null 2>>"$out/valgrind.log"
per_request "vs_tokio: coring fallback" "$out/coring.out" "$server"

valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/tokio.out" \
    "$vs_tokio" --only echo --backends "" --reps 1 --secs "$secs" \
    --warmup 1 --conns "$conns" >/dev/null 2>>"$out/valgrind.log"
per_request "vs_tokio: tokio current_thread" "$out/tokio.out" "$server"

awk -v c="$(cat "$out/vs_tokio: coring fallback.per")" \
    -v t="$(cat "$out/vs_tokio: tokio current_thread.per")" \
    'BEGIN { printf "coring fallback / tokio, user-space instructions per request: %.2fx\n", c / t }'
