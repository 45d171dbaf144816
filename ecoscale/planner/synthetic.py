"""Seeded synthetic applications shaped like Alibaba's microservice traces, for benchmarks.

Alibaba's 2021 traces (Luo et al., SoCC 2021) show call graphs that are trees of moderate
depth with wide fan-out near the root, and a small set of shared backends (caches, stores)
that most graphs end in. The generator follows that shape:

- one gateway (the front end) calls an entry service per endpoint;
- each call node has 1..4 children (fewer deeper down), grouped into 1-2 sequential stages
  of parallel calls, to a depth of up to 7;
- a child is a backend with a probability that grows with depth; backends are picked with
  Zipf-like popularity, so a few are shared by most endpoints;
- endpoint shares follow a Zipf law.

Profiles use the calibrated queueing curve (p99 = io + cpu / (1 - load / mu)) with seeded
parameters; old servers slow CPU work by 1.0-1.5x. Pure: numpy's seeded generator only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecoscale.model.latency import AppProfile, LatencyCurve
from ecoscale.model.topology import Topology, parse_topology

RHO_POINTS = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95)
APP_SATURATION_QPS = 4000.0


@dataclass(frozen=True)
class SyntheticApp:
    topology: Topology
    profile: AppProfile


def synthetic_app(services: int, seed: int = 1) -> SyntheticApp:
    """A topology and an old/new profile with ``services`` services (>= 10)."""
    if services < 10:
        raise ValueError("a synthetic app needs at least 10 services")
    rng = np.random.default_rng(seed)
    n_backends = max(3, services // 5)
    backends = [f"store-{i}" for i in range(n_backends)]
    logic = [f"svc-{i}" for i in range(services - n_backends - 1)]
    kinds = {"gateway": "logic"}
    kinds.update({b: ("memcached", "mongodb", "redis")[i % 3] for i, b in enumerate(backends)})
    kinds.update({s: "logic" for s in logic})
    calls: dict[str, set[str]] = {name: set() for name in kinds}
    popularity = 1.0 / np.arange(1, n_backends + 1) ** 1.1
    popularity /= popularity.sum()
    n_endpoints = max(3, services // 15)
    unused = list(rng.permutation(logic))

    def pick_logic(ancestors: set[str]) -> str:
        while unused:
            name = unused.pop()
            if name not in ancestors:
                return name
        while True:
            name = logic[int(rng.integers(len(logic)))]
            if name not in ancestors:
                return name

    def subtree(parent: str, depth: int, ancestors: set[str]) -> list[list[object]]:
        if depth >= 7:
            return []
        fanout = int(rng.integers(1, max(2, 5 - depth // 2)))
        children: list[object] = []
        for _ in range(fanout):
            if rng.random() < 0.25 + 0.1 * depth:
                child = backends[int(rng.choice(n_backends, p=popularity))]
                if child in ancestors or child == parent:
                    continue
                calls[parent].add(child)
                children.append(child)
            else:
                child = pick_logic(ancestors | {parent})
                calls[parent].add(child)
                sub = subtree(child, depth + 1, ancestors | {parent, child})
                children.append({child: sub} if sub else child)
        if not children:
            return []
        if len(children) > 1 and rng.random() < 0.5:
            cut = int(rng.integers(1, len(children)))
            return [children[:cut], children[cut:]]
        return [children]

    shares = 1.0 / np.arange(1, n_endpoints + 1) ** 0.9
    shares /= shares.sum()
    endpoints = {}
    for index in range(n_endpoints):
        entry = pick_logic({"gateway"})
        calls["gateway"].add(entry)
        sub = subtree(entry, 1, {"gateway", entry})
        path = [["gateway"], [{entry: sub} if sub else entry]]
        endpoints[f"ep-{index}"] = {"share": float(shares[index]), "http": f"GET /ep/{index}",
                                    "path": path}
    total = sum(e["share"] for e in endpoints.values())
    for endpoint in endpoints.values():
        endpoint["share"] /= total
    data = {
        "app": f"synthetic-{services}",
        "frontend": "gateway",
        "services": {n: {"kind": kinds[n], "calls": sorted(calls[n])} for n in kinds},
        "endpoints": endpoints,
    }
    topology = parse_topology(data, f"synthetic({services}, seed={seed})")
    return SyntheticApp(topology, _profile(topology, rng))


def _profile(topology: Topology, rng: np.random.Generator) -> AppProfile:
    visits = topology.visits_per_request()
    curves = {}
    for name, service in topology.services.items():
        io_bound = service.kind in ("mongodb",)
        headroom = 1.0 if name == topology.frontend else float(rng.uniform(1.05, 3.0))
        cpu_ms = float(rng.lognormal(np.log(0.4), 0.5))
        io_ms = float(rng.uniform(0.8, 1.5) if io_bound else rng.uniform(0.05, 0.3))
        slow = float(rng.uniform(1.0, 1.1) if io_bound else rng.uniform(1.0, 1.5))
        share = visits[name] if visits[name] > 0 else 0.01
        mu = headroom * APP_SATURATION_QPS * share
        curves[name] = {
            "new": _curve(mu, cpu_ms, io_ms),
            "old": _curve(mu / slow, cpu_ms * slow, io_ms),
        }
    return AppProfile(topology.app, "synthetic", "calibrated", curves,
                      provenance={"statement": "SYNTHETIC: seeded generator "
                                               "(ecoscale.planner.synthetic)"})


def _curve(mu: float, cpu_ms: float, io_ms: float) -> LatencyCurve:
    rows = [[rho * mu, io_ms + cpu_ms / (1 - rho), 0.9 * rho] for rho in RHO_POINTS]
    return LatencyCurve.from_points(rows, mu)
