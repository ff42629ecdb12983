#!/bin/bash
# User-space instructions per echo request in the coring server thread, counted by
# callgrind: a figure that, unlike CPU time, does not move with the machine's load.
# The fallback backend only (valgrind does not run io_uring's shared rings); the layers
# above the backend (tasks, ops, the driver's table) are the same code on both.
#
# usage: bench/scripts/callgrind-echo.sh [secs]   (from the workspace root; needs valgrind)
set -euo pipefail
secs=${1:-3}
cargo build --release -q -p coring-bench
bin=target/release/coring-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.out" \
    "$bin" echo --backend fallback --client-backend fallback --secs "$secs" --warmup 1 \
    --conns 16 --no-progress >/dev/null 2>"$out/valgrind.log"
for f in "$out"/cg.out-*; do
    # The server thread's profile is the one that runs echo::server_thread.
    inclusive=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null)
    [[ $inclusive == *"echo::server_thread"* ]] || continue
    total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    # One send per echoed request.
    callers=$(callgrind_annotate --tree=caller "$f" 2>/dev/null)
    sends=$(grep -B1 '\*.*send.c:send ' <<<"$callers" | head -1 \
        | sed -E 's/.*\(([0-9,]+)x\).*/\1/' | tr -d ,)
    echo "server thread: $total instructions, $sends requests, $((total / sends)) per request"
done
