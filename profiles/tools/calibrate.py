"""Write profiles/<app>/calibrated.yaml: latency profiles CALIBRATED, NOT MEASURED.

Usage: python profiles/tools/calibrate.py [--check]

Each service on each generation follows a queueing curve
    p99(x) = io_ms + cpu_ms / (1 - x / mu)          (x: per-replica load, req/s)
tabulated at loads 0 .. 95 % of mu; mu (saturation throughput per replica) is set from the
service's share of the front-end load and a headroom over the application's saturation S:
mu = headroom * S * visits. On the old generation the CPU part is slower by ``slow``
(both cpu_ms and mu), the I/O part is unchanged. Utilisation of the slot = util_sat * x / mu.

The parameters below are chosen so that the model reproduces the published
characterisation of socialNetwork on old (Ivy Bridge) vs new (Skylake) servers
(Wang, Gupta, Sriraman: HotInfra 2023, NetZero 2023; EcoScale, YArch 2024):
- the application saturates at S on all-new; the SLO is p99 at 75 % of S;
- moved alone to old, most services cost the application < 5 % of its saturation
  throughput, user-timeline-service about 17 %;
- media-service and media-mongodb tolerate old hardware (no slowdown);
- old servers meet the SLO at low load, within 2-3 ms of new;
- all-old violates the SLO above about 60 % of the SLO load (so ~2/3 of a diurnal day,
  as the papers saw).
``--check`` prints these figures from the written file through ecoscale's own model.

hotelReservation and mediaMicroservices have no published old-vs-new characterisation: their
profiles use the same curve shape with parameters by service kind (KIND_PARAMS below), the
front end as the bottleneck, and say so in their provenance ("generic by kind").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ecoscale.adapters.files import load_topology, write_yaml  # noqa: E402

APP_SATURATION_QPS = 4000.0
RHO_POINTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)

# service: (headroom over S, cpu_ms, io_ms, old slowdown, util at saturation)
PARAMS: dict[str, tuple[float, float, float, float, float]] = {
    "nginx-thrift": (1.10, 0.90, 0.30, 1.15, 0.90),
    "home-timeline-service": (1.15, 0.70, 0.20, 1.20, 0.90),
    "user-timeline-service": (1.08, 0.70, 0.20, 1.30, 0.90),
    "post-storage-service": (1.00, 0.80, 0.20, 1.04, 0.90),
    "compose-post-service": (1.60, 1.40, 0.30, 1.50, 0.90),
    "text-service": (2.50, 0.60, 0.20, 1.25, 0.90),
    "url-shorten-service": (2.50, 0.40, 0.20, 1.25, 0.90),
    "user-mention-service": (2.50, 0.40, 0.20, 1.25, 0.90),
    "user-service": (2.50, 0.40, 0.20, 1.25, 0.90),
    "social-graph-service": (2.50, 0.40, 0.20, 1.25, 0.90),
    "unique-id-service": (3.00, 0.20, 0.10, 1.25, 0.90),
    "media-service": (3.00, 0.30, 0.20, 1.00, 0.90),
    "post-storage-memcached": (1.60, 0.20, 0.10, 1.10, 0.80),
    "home-timeline-redis": (1.60, 0.20, 0.10, 1.10, 0.80),
    "user-timeline-redis": (1.60, 0.20, 0.10, 1.10, 0.80),
    "post-storage-mongodb": (1.25, 0.40, 1.20, 1.05, 0.50),
    "user-timeline-mongodb": (1.40, 0.60, 1.20, 1.30, 0.50),
    "media-mongodb": (2.00, 0.40, 1.20, 1.00, 0.50),
}
DEFAULT_PARAMS = (3.00, 0.30, 0.30, 1.15, 0.50)   # services that no endpoint of the mix calls
IDLE_SERVICE_QPS = 50.0                            # their nominal per-replica capacity scale

# Generic parameters by kind (headroom, cpu_ms, io_ms, old slowdown, util at saturation),
# for apps without a published characterisation; the front end gets headroom 1.0.
KIND_PARAMS: dict[str, tuple[float, float, float, float, float]] = {
    "logic": (1.30, 0.60, 0.20, 1.20, 0.90),
    "memcached": (1.80, 0.20, 0.10, 1.10, 0.80),
    "redis": (1.80, 0.20, 0.10, 1.10, 0.80),
    "mongodb": (1.50, 0.40, 1.20, 1.05, 0.50),
    "infra": (3.00, 0.20, 0.20, 1.00, 0.50),
}
APPS = ("socialNetwork", "hotelReservation", "mediaMicroservices")


def curve(mu: float, cpu_ms: float, io_ms: float, util_sat: float) -> dict[str, object]:
    rows = []
    for rho in RHO_POINTS:
        x = rho * mu
        rows.append([round(x, 3), round(io_ms + cpu_ms / (1.0 - rho), 4),
                     round(util_sat * rho, 4)])
    return {"saturation_qps": round(mu, 3), "points": rows}


def params_for(app: str, name: str, kind: str, frontend: str
               ) -> tuple[float, float, float, float, float]:
    if app == "socialNetwork":
        return PARAMS.get(name, DEFAULT_PARAMS)
    headroom, cpu_ms, io_ms, slow, util_sat = KIND_PARAMS[kind]
    return (1.0 if name == frontend else headroom), cpu_ms, io_ms, slow, util_sat


def build(app: str) -> dict[str, object]:
    topology = load_topology(app)
    visits = topology.visits_per_request()
    services: dict[str, object] = {}
    for name, service in topology.services.items():
        headroom, cpu_ms, io_ms, slow, util_sat = params_for(app, name, service.kind,
                                                             topology.frontend)
        load_share = visits[name] if visits[name] > 0 else IDLE_SERVICE_QPS / APP_SATURATION_QPS
        mu_new = headroom * APP_SATURATION_QPS * load_share
        services[name] = {
            "new": curve(mu_new, cpu_ms, io_ms, util_sat),
            "old": curve(mu_new / slow, cpu_ms * slow, io_ms, util_sat),
        }
    if app == "socialNetwork":
        statement = ("CALIBRATED, NOT MEASURED: queueing curves fitted to the published "
                     "characterisation of socialNetwork on old vs new servers; a profile "
                     "measured on a pool replaces it (ecoscale profile).")
        sources = ("Wang, Gupta, Sriraman: HotInfra 2023, NetZero 2023; EcoScale (Wang, Pan, "
                   "Gupta, Sriraman), YArch 2024")
    else:
        statement = (f"CALIBRATED, NOT MEASURED, generic by kind: no published old-vs-new "
                     f"characterisation of {app} exists; parameters by service kind, the front "
                     "end as the bottleneck. Profile it on a pool (ecoscale profile) before "
                     "relying on it.")
        sources = "none for this app; parameters by kind in profiles/tools/calibrate.py"
    return {
        "app": app,
        "name": "calibrated",
        "kind": "calibrated",
        "provenance": {
            "statement": statement,
            "method": "profiles/tools/calibrate.py (parameters and targets in its docstring)",
            "published_sources": sources,
            "hardware": "CloudLab c6420 (new) and c8220 (old), per socket "
                        "(profiles/hardware/cloudlab.yaml)",
            "application_saturation_qps": APP_SATURATION_QPS,
            "power_source": "modelled (power curve per slot x utilisation); no measurement",
        },
        "e2e_calibration": 1.0,
        "slo_load_fraction": 0.75,
        "services": services,
    }


def check(app: str, path: Path) -> None:
    from ecoscale.adapters.files import load_hardware, load_profile
    from ecoscale.model.app import AppModel
    from ecoscale.model.placement import Placement, ServicePlacement

    topology = load_topology(app)
    model = AppModel(topology, load_profile(app, str(path)), load_hardware())
    print(f"== {app}")
    all_new = Placement.uniform(topology.service_names, "new")
    all_old = Placement.uniform(topology.service_names, "old")
    sat = model.saturation_qps(all_new)
    slo_load = 0.75 * sat
    slo = float(model.e2e_p99(all_new, slo_load))
    print(f"all-new saturation {sat:.0f} req/s; SLO = p99 at {slo_load:.0f} req/s = {slo:.2f} ms")
    print(f"all-old saturation {model.saturation_qps(all_old):.0f} req/s")
    for name in topology.service_names:
        alone = all_new.with_service(name, ServicePlacement("old"))
        loss = 1 - model.saturation_qps(alone) / sat
        if loss > 0.001:
            print(f"  alone on old: {name:28s} loses {100 * loss:5.1f} % of saturation")
    low = 0.05 * sat
    print(f"at {low:.0f} req/s: all-new {float(model.e2e_p99(all_new, low)):.2f} ms, "
          f"all-old {float(model.e2e_p99(all_old, low)):.2f} ms")
    loads = np.linspace(0, slo_load, 3001)
    ok = model.e2e_p99(all_old, loads) <= slo
    print(f"all-old meets the SLO up to {loads[ok].max():.0f} req/s "
          f"= {loads[ok].max() / slo_load:.2f} of the SLO load")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the calibration targets")
    args = parser.parse_args()
    for app in APPS:
        path = ROOT / "profiles" / app / "calibrated.yaml"
        header = (
            f"# {app} latency profile: CALIBRATED, NOT MEASURED.\n"
            "# Generated by profiles/tools/calibrate.py; do not edit by hand.\n"
            "# points: [per-replica load req/s, p99 ms, CPU utilisation of the slot 0..1]\n"
        )
        write_yaml(path, build(app), header)
        print(f"wrote {path.relative_to(ROOT)}")
        if args.check:
            check(app, path)


if __name__ == "__main__":
    main()
