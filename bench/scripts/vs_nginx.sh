#!/bin/bash
# coring's file_server against nginx (`sendfile on`), both on the same core, with the same
# client: requests/s, transfer rate, p99 latency and server CPU per request.
#
# Four servers run at once, each pinned to CPU 0, and are loaded one at a time: nginx
# (one worker, `sendfile on`, access log off), coring's file_server zero-copy (bodies by
# `TcpStream::send_file`: `sendfile(2)`), the same with `--splice` (io_uring's linked
# splices through a pipe) and coring's file_server `--copy` (bodies read into a buffer and
# written). The client is `wrk -t1 -c16`, pinned to CPU 1, for 1 KiB, 64 KiB and 1 MiB
# files; the rounds interleave every (server, size) pair, so drift in the machine's load
# spreads over all of them. Server CPU is utime + stime of the whole process (every thread:
# io_uring's io-wq workers and coring's blocking pool count too) from /proc/PID/stat,
# before and after each run. Each figure is the mean over the rounds (min-max in the raw
# file); ratios are of those means.
#
# Installs nginx and wrk with apt-get if they are missing (needs root for that only).
#
# usage: bench/scripts/vs_nginx.sh [rounds] [secs]      (from the workspace root)
#   env: BACKEND=io_uring|fallback (coring's backend, default io_uring),
#        SIZES="1k 64k 1m", KEEP=1 (keep the scratch directory and print its path)
set -euo pipefail
rounds=${1:-3}
secs=${2:-5}
backend=${BACKEND:-io_uring}
sizes=${SIZES:-"1k 64k 1m"}

need() {
    command -v "$1" >/dev/null && return
    echo "vs_nginx: installing $2" >&2
    apt-get install -y --no-install-recommends "$2" >/dev/null
}
[[ -x /usr/sbin/nginx ]] || need nginx nginx
need wrk wrk
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q --example file_server
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
server_bin=$target_dir/release/examples/file_server
[[ -x $server_bin ]] || { echo "vs_nginx: no $server_bin" >&2; exit 1; }

work=$(mktemp -d /tmp/vs_nginx.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/www" "$work/nginx"
chmod 755 "$work" "$work/www"
bytes() { case $1 in *k) echo $((${1%k} * 1024)) ;; *m) echo $((${1%m} * 1024 * 1024)) ;; *) echo "$1" ;; esac; }
for s in $sizes; do head -c "$(bytes "$s")" /dev/urandom >"$work/www/$s.bin"; done
chmod 644 "$work"/www/*

# A free port: bind to 0 and read it back.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

nginx_port=$(free_port)
cat >"$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    sendfile on;
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
    }
}
EOF
# The master is pinned too; it sleeps while the worker serves (its CPU is counted anyway).
taskset -c 0 "$nginx_bin" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)
nginx_pid=$!

# start_coring NAME [flags]: runs file_server pinned to CPU 0; sets port_NAME, pid_NAME.
start_coring() {
    local name=$1
    shift
    CORING_BACKEND=$backend taskset -c 0 "$server_bin" --root "$work/www" \
        --addr 127.0.0.1:0 "$@" >"$work/$name.out" 2>"$work/$name.err" &
    local pid=$!
    pids+=($pid)
    for _ in $(seq 100); do
        grep -q 'listening on' "$work/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    local addr
    addr=$(sed -n 's|listening on http://||p' "$work/$name.out")
    [[ -n $addr ]] || { echo "vs_nginx: $name did not start" >&2; cat "$work/$name.err" >&2; exit 1; }
    eval "port_$name=${addr##*:}"
    eval "pid_$name=$pid"
}
start_coring zerocopy
start_coring splice --splice
start_coring copy --copy
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" 2>/dev/null && break
    sleep 0.1
done
for s in $sizes; do
    for port in "$nginx_port" "$port_zerocopy" "$port_splice" "$port_copy"; do
        got=$(curl -s "http://127.0.0.1:$port/$s.bin" | cmp - "$work/www/$s.bin" && echo same)
        [[ $got == same ]] || { echo "vs_nginx: port $port serves other bytes for $s.bin" >&2; exit 1; }
    done
done

hz=$(getconf CLK_TCK)
# cpu_ticks PID...: utime + stime of these processes (all their threads), in clock ticks.
cpu_ticks() {
    local t=0 p
    for p in "$@"; do
        # Fields after the parenthesised name: utime and stime are the 12th and 13th.
        t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo $t
}
# to_us VALUE: wrk's latency (e.g. 812.00us, 1.23ms, 2.00s) in microseconds.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1e6; print n * m }'; }
# to_mbs VALUE: wrk's Transfer/sec (e.g. 1.23GB) in MB/s (MiB-based, as wrk prints).
to_mbs() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /GB$/) m = 1024; else if (v ~ /MB$/) m = 1; else if (v ~ /KB$/) m = 1 / 1024; else m = 1 / 1048576; print n * m }'; }

raw=$work/raw.tsv
echo -e "round\tsize\tserver\treqs\treq_s\tmb_s\tp99_us\tcpu_s" >"$raw"
for r in $(seq "$rounds"); do
    for s in $sizes; do
        for srv in nginx zerocopy splice copy; do
            case $srv in
                nginx) port=$nginx_port; spids=$(echo "$nginx_pid" $(pgrep -P "$nginx_pid")) ;;
                zerocopy) port=$port_zerocopy; spids=$pid_zerocopy ;;
                splice) port=$port_splice; spids=$pid_splice ;;
                copy) port=$port_copy; spids=$pid_copy ;;
            esac
            # shellcheck disable=SC2086
            before=$(cpu_ticks $spids)
            out=$(taskset -c 1 wrk -t1 -c16 -d"${secs}s" --latency "http://127.0.0.1:$port/$s.bin")
            # shellcheck disable=SC2086
            after=$(cpu_ticks $spids)
            reqs=$(awk '/requests in/ {print $1}' <<<"$out")
            reqs_s=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            xfer=$(awk '/Transfer\/sec/ {print $2}' <<<"$out")
            p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
            errs=$(grep -E 'Socket errors|Non-2xx' <<<"$out" || true)
            [[ -z $errs ]] || echo "vs_nginx: $srv $s round $r: $errs" >&2
            cpu=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN { print t / hz }')
            echo -e "$r\t$s\t$srv\t$reqs\t$reqs_s\t$(to_mbs "$xfer")\t$(to_us "$p99")\t$cpu" >>"$raw"
            printf '  round %d %-4s %-9s %10s req/s  p99 %6s  cpu %5.2fs\n' \
                "$r" "$s" "$srv" "$reqs_s" "$p99" "$cpu" >&2
        done
    done
done

echo
echo "coring file_server ($backend) vs nginx $("$nginx_bin" -v 2>&1 | sed 's|.*/||'), sendfile on;" \
    "servers on CPU 0, wrk -t1 -c16 on CPU 1, $rounds interleaved rounds of ${secs}s (mean)"
echo "command: bench/scripts/vs_nginx.sh $rounds $secs"
echo
awk -F'\t' -v sizes="$sizes" '
NR == 1 { next }
{
    k = $2 SUBSEP $3
    n[k]++; reqs[k] += $4; rs[k] += $5; mb[k] += $6; p99[k] += $7; cpu[k] += $8
}
END {
    printf "| size | server | req/s | MB/s | p99 (us) | server CPU/req (us) | req per CPU-s |\n"
    printf "|---|---|---:|---:|---:|---:|---:|\n"
    ns = split(sizes, S, " ")
    split("nginx zerocopy splice copy", V, " ")
    name["nginx"] = "nginx"; name["zerocopy"] = "coring zero-copy (sendfile)"
    name["splice"] = "coring zero-copy --splice"; name["copy"] = "coring --copy"
    for (i = 1; i <= ns; i++) for (j = 1; j <= 4; j++) {
        k = S[i] SUBSEP V[j]
        if (!n[k]) continue
        R[k] = rs[k] / n[k]
        E[k] = reqs[k] / cpu[k]
        printf "| %s | %s | %.0f | %.1f | %.0f | %.1f | %.0f |\n", S[i], name[V[j]], R[k], mb[k] / n[k], p99[k] / n[k], 1e6 * cpu[k] / reqs[k], E[k]
    }
    printf "\nRatios (req/s ; requests per server-CPU-second):\n\n"
    printf "| size | zero-copy / nginx | --splice / nginx | --copy / nginx | zero-copy / --copy | --splice / --copy |\n"
    printf "|---|---:|---:|---:|---:|---:|\n"
    for (i = 1; i <= ns; i++) {
        a = S[i] SUBSEP "zerocopy"; b = S[i] SUBSEP "nginx"; c = S[i] SUBSEP "copy"; d = S[i] SUBSEP "splice"
        printf "| %s | %.2f ; %.2f | %.2f ; %.2f | %.2f ; %.2f | %.2f ; %.2f | %.2f ; %.2f |\n", S[i], R[a] / R[b], E[a] / E[b], R[d] / R[b], E[d] / E[b], R[c] / R[b], E[c] / E[b], R[a] / R[c], E[a] / E[c], R[d] / R[c], E[d] / E[c]
    }
}' "$raw"
echo
echo "raw (per round):"
column -t -s $'\t' "$raw"
