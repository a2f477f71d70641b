#!/usr/bin/env python3
"""Samples of a `perf record --call-graph=dwarf` profile (benches/profile.sh) by stage.

    benches/phases.py PERF.DATA            share of the samples by stage, the first that matches
                                           any frame of the sample's stack, in the order below
    benches/phases.py PERF.DATA LEAF [N]   for samples whose innermost function contains LEAF,
                                           the first N frames of spanlake, parquet, arrow, tonic…
"""
import collections
import re
import subprocess
import sys

STAGES = [
    ("seal: parquet encode", ["parquet::arrow::arrow_writer", "parquet::column", "parquet::file::writer"]),
    ("seal: arrow conversion", ["spanlake_exporter::parquet::convert"]),
    ("seal: other", ["Sealed::seal", "LakeWriter::seal"]),
    ("log append", ["Wal::append", "wal::Wal"]),
    ("fsync", ["fdatasync", "fsync"]),
    ("redaction", ["redaction::"]),
    ("lifecycle", ["spanlake_processor::lifecycle"]),
    ("batch", ["spanlake_processor::batch"]),
    ("decode", ["SpanBlock::decode", "spans::decode", "read_request"]),
    ("writer other", ["LakeWriter", "parquet::writer", "ParquetExporter"]),
    ("receive (gRPC, HTTP)", ["tonic::", "h2::", "hyper::", "axum::", "otlp::http2::"]),
    ("context switches, idle", ["finish_task_switch", "schedule", "park", "epoll_wait", "futex"]),
]
OURS = re.compile(r"spanlake|parquet::|arrow|tonic|h2::|prost|hyper|zstd")


def samples(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"], capture_output=True, text=True, check=True).stdout
    for block in out.split("\n\n"):
        frames = [line.strip().split(" ", 1)[-1] for line in block.strip().split("\n") if line.strip()]
        if frames:
            yield frames


def main():
    stacks = list(samples(sys.argv[1]))
    total = len(stacks)
    counts = collections.Counter()
    if len(sys.argv) > 2:
        leaf, depth = sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2
        for frames in stacks:
            if leaf in frames[0]:
                counts[" <- ".join(f[:90] for f in [f for f in frames[1:] if OURS.search(f)][:depth])] += 1
        print(f"{sum(counts.values())} of {total} samples in {leaf}")
    else:
        for frames in stacks:
            text = "\n".join(frames)
            counts[next((name for name, pats in STAGES if any(p in text for p in pats)), "other")] += 1
        print(f"{total} samples")
    for name, n in counts.most_common(20):
        print(f"{100 * n / total:5.1f}%  {name}")


main()
