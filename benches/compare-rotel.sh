#!/usr/bin/env bash
# Side by side, same load, same machine: Rotel (the `rotel` wheel on PyPI, OTLP/gRPC receiver,
# blackhole exporter: it decodes, batches and drops), spanlake (lifecycle, redaction, batch,
# Parquet, memory acknowledgements) and the floor (`spanlake-loadgen sink`: tonic + prost decode
# of each request, nothing else), alternating, RUNS times each.
#
#   cargo build --release -p spanlake -p spanlake-loadgen
#   benches/compare-rotel.sh [RUNS]              # as fast as each answers, 8 requests in flight
#   RATE=10000 benches/compare-rotel.sh [RUNS]   # a fixed rate, 2 in flight; spanlake runs the
#                                                # sidecar pipeline (benches/sidecar.json), durable
#   ACKS=memory RATE=10000 benches/compare-rotel.sh  # the same, acknowledged once in memory
#   LOAD="--distinct-values 100" benches/compare-rotel.sh  # more load generator options, for all
#
# CPU is each collector process's own (utime + stime from /proc); the load generator runs on the
# same cores.
set -euo pipefail
runs=${1:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
python3 -m pip download --quiet --no-deps rotel -d "$work" >/dev/null
(cd "$work" && python3 -m zipfile -e rotel-*.whl x >/dev/null)
rotel="$work/x/rotel/rotel-agent"
chmod +x "$rotel"
loadgen="$root/target/release/spanlake-loadgen"
tck=$(getconf CLK_TCK)
rate=${RATE:-0}
if [ "$rate" -gt 0 ]; then
  load=(--concurrency 2 --rate "$rate" --duration 10s)
  spanlake_args=(--config "$root/benches/sidecar.json" --acknowledgements "${ACKS:-durable}")
else
  load=(--concurrency 8 --duration 8s)
  spanlake_args=()
fi
# shellcheck disable=SC2206 # options, split on purpose
load+=(${LOAD:-})

# measure LABEL PID PORT: idle RSS, then CPU (utime + stime) and peak RSS of PID while the load
# generator drives 127.0.0.1:PORT; the process is stopped afterwards.
measure() {
  local label=$1 pid=$2 port=$3
  local idle t0 t1 hwm out spans
  idle=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  t0=$(awk '{print $14 + $15}' /proc/$pid/stat)
  local t_start=$(date +%s.%N)
  out=$("$loadgen" run --endpoint 127.0.0.1:$port --protocol grpc "${load[@]}" 2>&1 | head -1)
  local t_end=$(date +%s.%N)
  t1=$(awk '{print $14 + $15}' /proc/$pid/stat)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  spans=$(echo "$out" | grep -oE 'accepted [0-9]+' | grep -oE '[0-9]+')
  python3 -c "s=$spans; cpu=($t1-$t0)/$tck; wall=$t_end-$t_start; print(f'$label: {s/cpu:,.0f} spans per CPU-second, {cpu/wall*100:.1f}% of a core; idle RSS {$idle/1024:.1f} MiB, peak RSS {$hwm/1024:.1f} MiB')"
}

rotel_run() {
  "$rotel" start --otlp-grpc-endpoint 127.0.0.1:24317 --otlp-http-endpoint 127.0.0.1:24318 \
    --exporter blackhole >"$work/rotel.log" 2>&1 &
  local pid=$!
  sleep 1.5
  measure "rotel (blackhole)" "$pid" 24317
}

sink_run() {
  "$loadgen" sink --endpoint 127.0.0.1:24417 >"$work/sink.log" 2>&1 &
  local pid=$!
  sleep 1
  measure "floor (decode only)" "$pid" 24417
}

for _ in $(seq "$runs"); do
  echo -n "spanlake (parquet): "
  "$loadgen" bench --collector "$root/target/release/spanlake" "${spanlake_args[@]}" --protocol grpc "${load[@]}" 2>&1 \
    | grep -oE '[0-9]+ spans per CPU-second|[0-9.]+% of a core|idle RSS [0-9.]+ MiB, peak RSS [0-9.]+ MiB' | tr '\n' ' '
  echo
  rotel_run
  sink_run
done
rm -rf "$work"
