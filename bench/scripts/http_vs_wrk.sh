#!/usr/bin/env bash
# coring-bench http against wrk: closed-loop requests/s of the two load generators against
# the same server, to show that coring-bench's figures agree with wrk's.
#
# Each server (coring's examples/file_server, and nginx with sendfile, one worker) runs
# pinned to CPU 0 and serves one file; wrk (-t1 -c16) and `coring-bench http` (one thread,
# 16 connections, closed loop, keep-alive) are pinned to CPU 1, one after the other, for
# ROUNDS interleaved rounds of SECS seconds each (the order alternates between rounds).
# Prints requests/s of every run, the medians, and coring-bench / wrk (the median of the
# per-round ratios), plus both tools' p50 and p99, the server's CPU time per request (from
# /proc/PID/stat) and the load generator's (its process, by /usr/bin/time).
#
#   bench/scripts/http_vs_wrk.sh                       # file_server and nginx, 1 KiB file
#   SERVERS=file_server SIZE=65536 bench/scripts/http_vs_wrk.sh
#
# Settings (environment): ROUNDS (3), SECS (5), CONNS (16), SIZE in bytes (1024),
# SERVERS ("file_server nginx"), SERVER_CPU (0), CLIENT_CPU (1), CARGO_TARGET_DIR, and NICE
# (0): the niceness of the servers and load generators (e.g. -10, as root, so that other
# work on a shared machine takes less of their CPUs; both tools get the same).
# Installs wrk, jq and (if asked for) nginx from Debian's packages when they are missing.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-16}
SIZE=${SIZE:-1024}
SERVERS=${SERVERS:-"file_server nginx"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
NICE=${NICE:-0}
# Prefixes that run a command pinned (nice and taskset exec it: it keeps their PID).
on_server_cpu=(nice -n "$NICE" taskset -c "$SERVER_CPU")
on_client_cpu=(nice -n "$NICE" taskset -c "$CLIENT_CPU")

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

need() { # command, Debian package
    command -v "$1" >/dev/null 2>&1 && return
    echo "installing $2 ..." >&2
    if [ ! -d /var/lib/apt/lists/partial ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null)" ]; then
        apt-get update -qq >&2
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
}
need wrk wrk
need jq jq
need taskset util-linux
[ -x /usr/bin/time ] || need /usr/bin/time time
case " $SERVERS " in *" nginx "*) [ -x /usr/sbin/nginx ] || need nginx nginx ;; esac

echo "building file_server and coring-bench (release) ..." >&2
(cd "$root" && cargo build -q --release -p coring --example file_server &&
    cargo build -q --release -p coring-bench --bin coring-bench)
file_server=$target/release/examples/file_server
cb=$target/release/coring-bench

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/www"
head -c "$SIZE" /dev/urandom >"$work/www/file.bin"
# Long enough for every run, so a server never outlives the script by much.
life=$((ROUNDS * 4 * (SECS + 5) + 60))

# A free port for each server (other benchmarks may be listening on the usual ones).
declare -A ports spid
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
}
for s in $SERVERS; do ports[$s]=$(free_port); done
port_of() { echo "${ports[$1]}"; }

start_server() {
    local port
    port=$(port_of "$1")
    case $1 in
    file_server)
        "${on_server_cpu[@]}" "$file_server" --root "$work/www" --addr "127.0.0.1:$port" \
            --exit-after "$life" 2>"$work/file_server.log" &
        pids+=($!)
        spid[$1]=$!
        ;;
    nginx)
        mkdir -p "$work/nginx/logs"
        cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        root $work/www;
    }
}
EOF
        "${on_server_cpu[@]}" /usr/sbin/nginx -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" &
        pids+=($!)
        spid[$1]=$!
        ;;
    *)
        echo "unknown server '$1' (file_server or nginx)" >&2
        exit 2
        ;;
    esac
    for _ in $(seq 300); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/file.bin" && return
        sleep 0.1
    done
    echo "$1 did not answer on port $port within 30 s; its log:" >&2
    cat "$work/file_server.log" "$work/nginx/logs/error.log" 2>/dev/null >&2
    exit 1
}

for s in $SERVERS; do start_server "$s"; done

# A latency from wrk (`1.23ms`, `456.00us`, `1.02s`) in µs.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
        else if (v ~ /s$/) print n * 1000000; else print n }'
}

run_wrk() { # url -> "req/s p50 p99"
    local out
    out=$(/usr/bin/time -f "%U %S" -o "$work/time" \
        "${on_client_cpu[@]}" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$1")
    echo "$out" >>"$work/wrk.log"
    local rps p50 p99
    rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
    p99=$(to_us "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
        echo "wrk reported errors:" >&2
        echo "$out" | grep "Non-2xx\|Socket errors" >&2
    fi
    echo "$rps $p50 $p99"
}

run_cb() { # url -> "req/s p50 p99"
    local out
    out=$(/usr/bin/time -f "%U %S" -o "$work/time" \
        "${on_client_cpu[@]}" "$cb" http --url "$1" --conns "$CONNS" --threads 1 \
        --duration "$SECS" --warmup 0 --json --no-progress)
    echo "$out" >>"$work/coring-bench.log"
    local errs
    errs=$(echo "$out" | jq '.runs[0].counts.errors + .runs[0].counts.non_2xx')
    [ "$errs" = 0 ] || echo "coring-bench counted $errs errors or non-2xx responses" >&2
    echo "$out" | jq -r '.runs[0] | "\(.rate) \(.latency_us.p50) \(.latency_us.p99)"'
}

# CPU time (utime + stime, in clock ticks) of a process so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

declare -A rps p50 p99 scpu ccpu
for r in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
        url="http://127.0.0.1:$(port_of "$s")/file.bin"
        # Alternate which tool goes first.
        if [ $((r % 2)) = 1 ]; then tools="wrk coring-bench"; else tools="coring-bench wrk"; fi
        for t in $tools; do
            echo "round $r/$ROUNDS: $t -> $s ($SIZE B)" >&2
            t0=$(ticks "${spid[$s]}")
            if [ "$t" = wrk ]; then read -r a b c < <(run_wrk "$url"); else read -r a b c < <(run_cb "$url"); fi
            t1=$(ticks "${spid[$s]}")
            # Server CPU µs per request: its CPU over the run / the requests of the run.
            scpu[$s,$t,$r]=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v r="$a" -v secs="$SECS" \
                'BEGIN { printf "%.1f", d / hz * 1e6 / (r * secs) }')
            ccpu[$s,$t,$r]=$(awk -v r="$a" -v secs="$SECS" \
                '{ printf "%.1f", ($1 + $2) * 1e6 / (r * secs) }' "$work/time")
            rps[$s,$t,$r]=$a
            p50[$s,$t,$r]=$b
            p99[$s,$t,$r]=$c
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
echo "closed loop, $CONNS connections, ${SIZE}-byte file, $ROUNDS interleaved rounds of ${SECS} s;"
echo "server pinned to CPU $SERVER_CPU, load generator pinned to CPU $CLIENT_CPU (nice $NICE)"
echo "(wrk -t1 -c$CONNS -d${SECS}s --latency URL; coring-bench http --url URL --conns $CONNS --threads 1 --duration $SECS --warmup 0)"
echo
printf '| server | load generator | req/s per round | median req/s | p50 µs | p99 µs | server CPU µs/req | generator CPU µs/req |\n'
printf '|---|---|---|---:|---:|---:|---:|---:|\n'
for s in $SERVERS; do
    for t in wrk coring-bench; do
        each="" l50="" l99="" cpu="" gcpu=""
        for r in $(seq "$ROUNDS"); do
            each="$each ${rps[$s,$t,$r]}"
            l50="$l50 ${p50[$s,$t,$r]}"
            l99="$l99 ${p99[$s,$t,$r]}"
            cpu="$cpu ${scpu[$s,$t,$r]}"
            gcpu="$gcpu ${ccpu[$s,$t,$r]}"
        done
        printf '| %s | %s | %s | %.0f | %.0f | %.0f | %.1f | %.1f |\n' "$s" "$t" \
            "$(echo "$each" | awk '{ for (i = 1; i <= NF; i++) printf "%s%.0f", (i > 1 ? ", " : ""), $i }')" \
            "$(echo "$each" | median)" "$(echo "$l50" | median)" "$(echo "$l99" | median)" \
            "$(echo "$cpu" | median)" "$(echo "$gcpu" | median)"
    done
done
echo "(latencies and CPU per request: medians of the rounds)"
echo
for s in $SERVERS; do
    ratios=""
    for r in $(seq "$ROUNDS"); do
        ratios="$ratios $(awk -v a="${rps[$s,coring-bench,$r]}" -v b="${rps[$s,wrk,$r]}" 'BEGIN { printf "%.3f", a / b }')"
    done
    printf '%s: coring-bench / wrk requests/s = %.3f (median of the per-round ratios:%s)\n' \
        "$s" "$(echo "$ratios" | median)" "$ratios"
done
