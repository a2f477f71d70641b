#!/usr/bin/env bash
# Instructions per span of collector builds, counted by callgrind: repeatable where CPU time on
# these shared machines is not (the same build measured 5.6-10.5% of a core at 10k spans/s from
# one hour to the next). User-space instructions only: the kernel's share (syscalls, fsync,
# context switches, page faults) is not counted, so confirm a gain there with benches/ab.sh.
#
#   benches/instructions.sh BIN...                 # sidecar pipeline, durable, 2,000 spans/s for 10 s
#   ACKS=memory benches/instructions.sh BIN...
#   RATE=100 LOAD="--attributes 20 --attribute-size 5000 --spans-per-request 10" \
#     benches/instructions.sh BIN...               # the testbed's large spans
#   TOP=15 benches/instructions.sh BIN...          # and each build's 15 costliest functions (self)
#   KEEP=/tmp/counts benches/instructions.sh BIN... # keep each profile (and lake)
#
# Start-up is not counted (counting starts once the collector listens). Each run ends with
# the collector's shutdown, which writes out every row group: the seal and the commit of every
# span are in the count, so the count per span covers the whole path. Run it on a quiet machine
# and compare builds only where each accepted the same number of spans (a loaded machine makes
# the load generator fall short of its rate under valgrind, and other batches count otherwise).
# Also prints the lake's Parquet bytes per span (the files the run wrote). Needs valgrind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "benches/instructions.sh: valgrind is needed" >&2; exit 1; }
loadgen=$root/target/release/spanlake-loadgen
grpc=127.0.0.1:24617
http=127.0.0.1:24618
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for bin in "$@"; do
  rm -rf "$work/data" "$work"/callgrind.out*
  sed -e "s/{GRPC}/$grpc/; s/{HTTP}/$http/; s#{DATA}#$work/data#; s/{ACKS}/${ACKS:-durable}/" \
    "${CONFIG:-$root/benches/sidecar.json}" >"$work/pipeline.json"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
    "$bin" run --config "$work/pipeline.json" >"$work/collector.log" 2>&1 &
  collector=$!
  for _ in $(seq 120); do
    grep -q "listening on $grpc" "$work/collector.log" 2>/dev/null && break
    sleep 1
  done
  sleep 1
  callgrind_control -i on "$collector" >/dev/null
  # shellcheck disable=SC2086 # options, split on purpose
  out=$("$loadgen" run --endpoint "$grpc" --protocol grpc --concurrency 2 --rate "${RATE:-2000}" \
    --duration "${DURATION:-10s}" ${LOAD:-} | head -1)
  kill -INT "$collector"
  wait "$collector" || true
  spans=$(echo "$out" | grep -oE 'accepted [0-9]+' | grep -oE '[0-9]+')
  total=$(callgrind_annotate "$work/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  lake=$(find "$work/data" -name '*.parquet' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  python3 -c "print(f'$(basename "$bin"): {$total:,} instructions for $spans spans: {$total / $spans:,.0f} per span; lake {$lake / $spans:.2f} bytes per span')"
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp "$work/callgrind.out" "$KEEP/$(basename "$bin").callgrind"
    rm -rf "$KEEP/$(basename "$bin").lake" && cp -r "$work/data" "$KEEP/$(basename "$bin").lake"
  fi
  if [ -n "${TOP:-}" ]; then
    callgrind_annotate --inclusive=no "$work/callgrind.out" 2>/dev/null |
      grep -E "^ *[0-9,]+ \(" | sed -n "1,${TOP}p" | cut -c1-160
  fi
done
