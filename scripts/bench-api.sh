#!/usr/bin/env bash
# Load benchmark of the internal API: cached token reads against a bare /healthz, measured in
# the same run of the release build, at 64 connections. The server is examples/api_bench.rs
# (store, token service and API over a SQLite database seeded with linked users, no bot).
# Traffic goes to 127.0.0.1 only, and every load run is bounded by DURATION.
#
#   scripts/bench-api.sh                  # defaults below
#   DURATION=30s USERS=1000 scripts/bench-api.sh
#
# Needs wrk (apt-get install wrk). Results are summarised at the end; docs/benchmarks.md
# records a run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
USERS=${USERS:-500}
ROUNDS=${ROUNDS:-2}

if ! command -v wrk >/dev/null; then
    echo "bench-api: wrk is missing; install it with: apt-get install -y wrk" >&2
    exit 2
fi

cargo build --release --quiet --example api_bench

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

./target/release/examples/api_bench "$work/ready" "$USERS" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
    [ -s "$work/ready" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "bench-api: the server stopped:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
[ -s "$work/ready" ] || { echo "bench-api: the server did not start" >&2; exit 1; }
read -r url key <"$work/ready"
users=$(wc -l <"$work/ready.ids")
case "$url" in
    http://127.0.0.1:*) ;;
    *) echo "bench-api: refusing to load $url (loopback only)" >&2; exit 1 ;;
esac

# Each wrk thread walks the seeded users in turn, so reads spread over every link.
cat >"$work/token.lua" <<'LUA'
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do
    ids[#ids + 1] = line
end
local n = 0
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
request = function()
    n = n % #ids + 1
    return wrk.format("GET", "/v1/users/" .. ids[n] .. "/token")
end
LUA

export BENCH_KEY=$key BENCH_IDS=$work/ready.ids

# Prints "rps p50 p99" of one wrk run, latencies in milliseconds.
measure() {
    local name=$1; shift
    local out="$work/$name.txt"
    wrk --latency -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$@" >"$out"
    if grep -q "Non-2xx" "$out"; then
        echo "bench-api: $name had failed requests:" >&2
        cat "$out" >&2
        exit 1
    fi
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v
        }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /requests in/ { total = $1 }
        END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, total }
    ' "$out"
}

echo "bench-api: $users linked users, $CONNECTIONS connections, $THREADS wrk threads," \
    "$DURATION per run, $ROUNDS rounds, $(nproc) cores"
# Warm-up: connections, statement caches and the page cache.
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$url/healthz" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$work/token.lua" "$url" >"$work/warm.txt"
warm_tokens=$(awk '/requests in/ { print $1 }' "$work/warm.txt")

token_total=$warm_tokens
printf '%-8s %-8s %10s %9s %9s\n' round target "req/s" "p50 ms" "p99 ms"
for round in $(seq 1 "$ROUNDS"); do
    read -r h_rps h_p50 h_p99 _ < <(measure "healthz-$round" "$url/healthz")
    printf '%-8s %-8s %10s %9s %9s\n' "$round" healthz "$h_rps" "$h_p50" "$h_p99"
    read -r t_rps t_p50 t_p99 t_total < <(measure "token-$round" -s "$work/token.lua" "$url")
    printf '%-8s %-8s %10s %9s %9s\n' "$round" token "$t_rps" "$t_p50" "$t_p99"
    token_total=$((token_total + t_total))
    awk -v t="$t_rps" -v h="$h_rps" \
        'BEGIN { printf "round %s: token reads at %.0f %% of /healthz throughput\n", '"$round"', 100 * t / h }'
done

kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=
audited=$(sed -n 's/.*; \([0-9]*\) audit events stored/\1/p' "$work/server.log")
# wrk stops with requests in flight: those are served and audited but not counted, so the
# audit may hold a few more rows than wrk saw answers, never fewer.
echo "bench-api: wrk received $token_total tokens; $audited audit events stored"
if [ -z "$audited" ] || [ "$audited" -lt "$token_total" ]; then
    echo "bench-api: fewer audit rows than tokens handed out" >&2
    cat "$work/server.log" >&2
    exit 1
fi
