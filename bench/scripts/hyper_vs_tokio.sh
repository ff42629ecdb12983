#!/bin/bash
# hyper on coring (examples/hyper_server.rs: Compat + TokioIo, io_uring and fallback
# backends) against the same hyper service on tokio current_thread
# (bench/examples/hyper_tokio.rs; the service source is shared), `GET /` of 15 bytes.
#
# Each server is pinned to CPU 0, `wrk -t1 -c$conns -d${secs}s` to CPU 1 (HTTP/1.1,
# keep-alive). Rounds are interleaved (tokio, coring io_uring, coring fallback, then
# again) so that the machine's drift hits every contender alike. Per run: requests/s
# from wrk, and requests per server-CPU-second: wrk's request count over the server
# process's utime+stime (from /proc/PID/stat) across the run. Reported: every run, then
# the median per contender and its ratio to tokio.
#
# With CALLGRIND=1, it then also counts each server's user-space instructions per request
# under callgrind (tokio and coring on the fallback backend: valgrind does not run
# io_uring's shared rings), a figure the machine's load does not move: the process's
# whole count (startup included) over the requests wrk completed in a run of $secs.
#
# usage: [CALLGRIND=1] bench/scripts/hyper_vs_tokio.sh [rounds] [secs] [conns]  (from the
#        workspace root; needs wrk and taskset, valgrind for CALLGRIND=1; apt-get install wrk)
set -euo pipefail
rounds=${1:-3}
secs=${2:-5}
conns=${3:-16}
command -v wrk >/dev/null || { echo "hyper_vs_tokio: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "hyper_vs_tokio: taskset is missing (util-linux)" >&2; exit 1; }
cargo build --release -q --example hyper_server
cargo build --release -q -p coring-bench --example hyper_tokio
target=${CARGO_TARGET_DIR:-target}
coring_bin=$target/release/examples/hyper_server
tokio_bin=$target/release/examples/hyper_tokio
tck=$(getconf CLK_TCK)
out=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$out"
}
trap cleanup EXIT

# cpu_ticks PID: utime + stime of the process (fields 14 and 15 of /proc/PID/stat; the
# command name in field 2 has no spaces here).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME BACKEND BIN: one measured run; appends "NAME rps req_per_cpu_s" to results.
run() {
    local name=$1 backend=$2 bin=$3
    # Removed first: the child truncates it only once it runs, and until then the last
    # run's address would be read.
    rm -f "$out/addr"
    CORING_BACKEND=$backend taskset -c 0 "$bin" --addr 127.0.0.1:0 >"$out/addr" 2>"$out/log" &
    server_pid=$!
    local addr=
    for _ in $(seq 100); do
        addr=$(sed -n 's/^listening on //p' "$out/addr" 2>/dev/null)
        [[ -n $addr ]] && break
        sleep 0.05
    done
    [[ -n $addr ]] || { echo "$name did not start:" >&2; cat "$out/log" >&2; exit 1; }
    # Warm-up (connections, allocator, page faults), not measured.
    taskset -c 1 wrk -t1 -c"$conns" -d1s "$addr/" >/dev/null
    local t0 t1
    t0=$(cpu_ticks "$server_pid")
    taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" "$addr/" >"$out/wrk"
    t1=$(cpu_ticks "$server_pid")
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    if grep -q "Non-2xx\|Socket errors" "$out/wrk"; then
        echo "$name: wrk saw errors:" >&2
        cat "$out/wrk" >&2
        exit 1
    fi
    local reqs rps
    reqs=$(awk '/requests in/ {print $1}' "$out/wrk")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out/wrk")
    awk -v n="$name" -v r="$rps" -v q="$reqs" -v d="$((t1 - t0))" -v t="$tck" \
        'BEGIN { cpu = d / t; printf "%-16s %10.0f req/s  %6.2f server CPU-s  %10.0f req/CPU-s\n", n, r, cpu, q / cpu }' \
        | tee -a "$out/runs"
}

echo "hyper GET / : wrk -t1 -c$conns -d${secs}s (CPU 1), server on CPU 0, $rounds interleaved rounds"
for round in $(seq "$rounds"); do
    echo "round $round"
    run tokio - "$tokio_bin"
    run coring-io_uring io_uring "$coring_bin"
    run coring-fallback fallback "$coring_bin"
done
echo
echo "medians (ratio: coring / tokio)"
awk '
    { rps[$1] = rps[$1] " " $2; eff[$1] = eff[$1] " " $7 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        tr = median(rps["tokio"]); te = median(eff["tokio"])
        printf "| server | requests/s | requests per server-CPU-second | ratio (req/s) | ratio (req/CPU-s) |\n"
        printf "|---|---:|---:|---:|---:|\n"
        n = split("tokio coring-io_uring coring-fallback", names, " ")
        for (i = 1; i <= n; i++) {
            k = names[i]; r = median(rps[k]); e = median(eff[k])
            printf "| %s | %.0f | %.0f | %.2fx | %.2fx |\n", k, r, e, r / tr, e / te
        }
    }' "$out/runs"

[[ ${CALLGRIND:-0} == 1 ]] || exit 0
command -v valgrind >/dev/null || { echo "hyper_vs_tokio: valgrind is not installed" >&2; exit 1; }
echo
echo "user-space instructions per request (callgrind, wrk -t1 -c$conns -d${secs}s)"
# callgrind NAME BACKEND BIN
callgrind() {
    local name=$1 backend=$2 bin=$3 addr=
    rm -f "$out/addr"
    CORING_BACKEND=$backend valgrind --tool=callgrind --callgrind-out-file="$out/cg.$name" \
        "$bin" --addr 127.0.0.1:0 >"$out/addr" 2>"$out/log" &
    server_pid=$!
    for _ in $(seq 300); do
        addr=$(sed -n 's/^listening on //p' "$out/addr" 2>/dev/null)
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || { echo "$name did not start under valgrind:" >&2; cat "$out/log" >&2; exit 1; }
    local reqs
    reqs=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" "$addr/" | awk '/requests in/ {print $1}')
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    local ir
    ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/log")
    awk -v n="$name" -v i="$ir" -v q="$reqs" 'BEGIN { printf "%-16s %8d requests  %8.0f instructions/request\n", n, q, i / q }'
}
callgrind tokio - "$tokio_bin"
callgrind coring-fallback fallback "$coring_bin"
