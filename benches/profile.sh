#!/usr/bin/env bash
# Profile a collector build under load: the sidecar pipeline (benches/sidecar.json), driven by
# spanlake-loadgen at a fixed rate, sampled by perf for 8 seconds into OUT. Read OUT with
# benches/phases.py (samples by stage, or a function's callers).
#
#   benches/profile.sh BIN ACKS RATE OUT [loadgen options...]
#
#   apt-get install linux-perf
#   cargo build --release -p spanlake -p spanlake-loadgen; cp target/release/spanlake /tmp/b1
#   benches/profile.sh /tmp/b1 durable 10000 /tmp/k10.data
#   benches/profile.sh /tmp/b1 durable 1000 /tmp/large.data --attributes 20 --attribute-size 5000 --spans-per-request 10
#   benches/phases.py /tmp/k10.data                 # share of the samples by stage
#   benches/phases.py /tmp/k10.data memcmp          # who calls a function (the leaf's callers)
#
# CONCURRENCY (default 2) requests in flight; CONFIG another pipeline file than
# benches/sidecar.json; EVENT (default cpu-clock) and FREQ (default "-F 1000") for perf, e.g.
#   EVENT=page-faults FREQ="-c 1" benches/profile.sh BIN durable 1000 OUT ...   # every fault
#   EVENT=sched:sched_switch FREQ="-c 1" ...                                    # who waits where
#   CONCURRENCY=8 benches/profile.sh BIN durable 0 OUT                          # full rate
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$1 acks=$2 rate=$3 out=$4
shift 4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e "s#{GRPC}#127.0.0.1:34317#; s#{HTTP}#127.0.0.1:34318#; s#{DATA}#$work/data#; s#{ACKS}#$acks#" \
  "${CONFIG:-$root/benches/sidecar.json}" >"$work/pipeline.json"
"$bin" run --config "$work/pipeline.json" >"$work/collector.log" 2>&1 &
pid=$!
sleep 1.5
"$root/target/release/spanlake-loadgen" run --endpoint 127.0.0.1:34317 --protocol grpc \
  --concurrency "${CONCURRENCY:-2}" --rate "$rate" --duration 12s "$@" >"$work/loadgen.log" 2>&1 &
loadgen=$!
sleep 2
perf record -e ${EVENT:-cpu-clock} ${FREQ:--F 1000} --call-graph=dwarf,16384 -o "$out" -p "$pid" -- sleep 8 2>/dev/null
wait "$loadgen"
head -1 "$work/loadgen.log"
kill "$pid"
wait "$pid" || true
