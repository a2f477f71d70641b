#!/usr/bin/env bash
# A/B of collector builds on the same machine, alternating, RUNS rounds (default 3):
#
#   benches/ab.sh full BIN...   # as fast as each answers: 8 in flight, default pipeline, memory acks
#   benches/ab.sh 10k BIN...    # 10k spans/s: sidecar pipeline (benches/sidecar.json), durable
#   benches/ab.sh large BIN...  # the testbed's 1k spans/s of 20 x 5,000-byte attributes (10 a
#                               # request): sidecar pipeline, durable; DURATION=30s for less noise
#   ACKS=memory benches/ab.sh 10k BIN...
#   LOAD="--distinct-values 0" benches/ab.sh full BIN...   # more load generator options
#   CONFIG=my.json benches/ab.sh 10k BIN...   # another pipeline than benches/sidecar.json
#
# Copy each build out of target/ first with cp: a file as some tools write it (`strip -o`; LLD's
# mapped output before `--no-mmap-output-file`) sits in the page cache as large folios, which the
# kernel maps whole, and a collector started from it idles several MiB higher.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
loadgen=$root/target/release/spanlake-loadgen
mode=$1
shift
for _ in $(seq "${RUNS:-3}"); do
  for b in "$@"; do
    echo -n "$(basename "$b"): "
    if [ "$mode" = full ]; then
      "$loadgen" bench --collector "$b" --protocol grpc --concurrency 8 --duration 8s ${LOAD:-} \
        --acknowledgements "${ACKS:-memory}" 2>&1 |
        grep -oE '[0-9]+ spans per CPU-second|idle RSS [0-9.]+ MiB, peak RSS [0-9.]+ MiB|p99 [0-9.]+ ms|[0-9.]+ bytes/span on disk' | tr '\n' ' '
    else
      if [ "$mode" = large ]; then
        shape=(--rate 1000 --attributes 20 --attribute-size 5000 --spans-per-request 10)
      else
        shape=(--rate 10000)
      fi
      "$loadgen" bench --collector "$b" --config "${CONFIG:-$root/benches/sidecar.json}" \
        --acknowledgements "${ACKS:-durable}" --protocol grpc --concurrency 2 "${shape[@]}" \
        --duration "${DURATION:-10s}" ${LOAD:-} 2>&1 |
        grep -oE '[0-9.]+% of a core|idle RSS [0-9.]+ MiB, peak RSS [0-9.]+ MiB|latency p50 [0-9.]+ ms p99 [0-9.]+ ms' | tr '\n' ' '
    fi
    echo
  done
done
