"""Benchmark: `ecoscale topology import` on a large export.

Synthesizes socialNetwork traces (ecoscale.testing_traces, seeded), writes them as a Jaeger
and a Zipkin export in a temporary folder, and times reading each file and inferring the
topology from it, separately. Prints traces, spans, MB and seconds per phase, and spans/s
overall; baseline in the same process: ``json.loads`` of the same file alone (the floor of
any reader). Target: 20,000 traces (about 170,000 spans, a large `/api/traces` export) under
30 s per format (on a 2-CPU machine).

    python3 tests/bench/bench_topology_import.py [--traces 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ecoscale.adapters.files import load_topology
from ecoscale.adapters.tracespans import read_trace_file
from ecoscale.model.topology_inference import infer_topology
from ecoscale.testing_traces import jaeger_document, synthesize, zipkin_document

TARGET_S = 30.0
"""Read + infer, per format, for the default --traces."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=20_000)
    args = parser.parse_args()
    topology = load_topology("socialNetwork")
    synthesis = synthesize(topology, args.traces, seed=1)
    print(f"socialNetwork, {args.traces:,} traces")
    with tempfile.TemporaryDirectory() as folder:
        for fmt, render in (("jaeger", jaeger_document), ("zipkin", zipkin_document)):
            path = Path(folder) / f"{fmt}.json"
            path.write_text(json.dumps(render(synthesis)))
            began = time.perf_counter()
            json.loads(path.read_text())
            baseline_s = time.perf_counter() - began
            began = time.perf_counter()
            read = read_trace_file(path)
            read_s = time.perf_counter() - began
            began = time.perf_counter()
            result = infer_topology(read.spans, "socialNetwork")
            infer_s = time.perf_counter() - began
            total = read_s + infer_s
            verdict = "ok" if total < TARGET_S or args.traces != 20_000 else "OVER TARGET"
            print(f"  {fmt:<6} {len(read.spans):>8,} spans {path.stat().st_size / 1e6:6.1f} MB: "
                  f"read {read_s:5.2f} s (json.loads alone {baseline_s:5.2f} s), "
                  f"infer {infer_s:5.2f} s, "
                  f"{len(read.spans) / total:9,.0f} spans/s, {len(result.findings)} findings "
                  f"[{verdict}, target {TARGET_S:g} s]")


if __name__ == "__main__":
    main()
