"""Benchmark: reading a user's inputs (libyaml, hostile-YAML checks, the bad-input corpus).

Prints, for a generated profile (4,000 services x 2 generations x 20 points: 4 MB): the
time of ``read_yaml`` + ``parse_profile`` (libyaml's CSafeLoader, the aliases/depth check
skipped on plain text) against pure-Python ``yaml.SafeLoader`` in the same process, which
is what ecoscale used before (~35 s were reported for such a file). Then the time to
refuse an alias bomb and a 100,000-deep nesting, each of which used to take 20-30 s and a
MemoryError or crash the interpreter. Target: at least 2.5x faster than the pure-Python
baseline (the ratio, measured in one process, does not depend on how busy the machine is).

    python3 tests/bench/bench_inputs.py [--services 10000]   # 10,000 services: ~10 MB
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from ecoscale.adapters.files import parse_profile, parse_yaml_text, read_yaml
from ecoscale.errors import InputError

TARGET_SPEEDUP = 2.5
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(8)) + "services: *i\n"


def profile_text(services: int) -> str:
    lines = ["app: bench", "name: bench", "kind: calibrated", "services:"]
    for s in range(services):
        lines.append(f"  service-{s:05d}:")
        for generation, slow in (("new", 1.0), ("old", 2.0)):
            points = ", ".join(f"[{x * 10.0:.1f}, {slow * (1.0 + x * 0.05):.4f}, "
                               f"{min(x * 0.045, 1.0):.3f}]" for x in range(20))
            lines.append(f"    {generation}: {{saturation_qps: 250.0, points: [{points}]}}")
    return "\n".join(lines) + "\n"


def timed(action) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def refused(text: str) -> float:
    def run() -> None:
        try:
            parse_yaml_text(text, "hostile.yaml")
        except InputError:
            return
        raise AssertionError("accepted")
    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profile.yaml"
        path.write_text(profile_text(args.services), encoding="utf-8")
        size_mb = path.stat().st_size / 1e6
        ours = timed(lambda: parse_profile(read_yaml(path), str(path)))
        baseline = timed(lambda: yaml.load(path.read_text(), Loader=yaml.SafeLoader))  # noqa: S506
    print(f"profile of {args.services} services, {size_mb:.1f} MB:")
    print(f"  read_yaml (libyaml) + parse_profile     {ours:6.2f} s")
    print(f"  baseline: yaml.SafeLoader (pure Python) {baseline:6.2f} s, parse only: "
          f"{baseline / ours:.1f}x slower (target >= {TARGET_SPEEDUP:g}x: "
          f"{'met' if baseline / ours >= TARGET_SPEEDUP else 'MISSED'})")
    print(f"alias bomb (9^9 nodes) refused in      {refused(BOMB) * 1000:6.1f} ms")
    deep = "x: " + "[" * 100_000 + "]" * 100_000
    print(f"100,000-deep nesting refused in        {refused(deep) * 1000:6.1f} ms")
    print(f"recursive alias refused in             {refused('a: &a [*a]') * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
