"""The `ecoscale` command: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ecoscale import __version__
from ecoscale.errors import EcoscaleError
from ecoscale.lab.cli import register as register_lab

REPLAY_HELP = """\
Replay a load trace and a grid carbon-intensity trace through each placement policy and
compare carbon (embodied + operational, kgCO2e) and time in SLO violation.

With no arguments: socialNetwork with its calibrated profile on the EcoScale papers'
CloudLab servers, one day of the WorldCup98 trace (1998-07-01, UTC) scaled so that its peak
is the SLO load, California (CISO) carbon intensity from 2022-01-01, one-minute steps.
"""


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="evaluate carbon and SLO of placement policies on traces",
                       description=REPLAY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(p)
    p.add_argument("--table", type=Path,
                   help="policy table from `ecoscale plan` for the ecoscale policy "
                        "(default: planned here for the replayed peak)")
    p.add_argument("--load-trace", default="worldcup98",
                   help="shipped load trace (worldcup98, google2011) or a CSV path "
                        "(default: %(default)s)")
    p.add_argument("--load-column", help="column of the load CSV that holds the rate")
    p.add_argument("--carbon-trace", default="CISO",
                   help="shipped carbon trace (CISO, ERCO) or a CSV path with a fuel mix or "
                        "an intensity column (default: %(default)s)")
    p.add_argument("--carbon-column", help="column of the carbon CSV that holds gCO2e/kWh")
    p.add_argument("--carbon-factors",
                   help="YAML with factors_g_per_kwh per fuel (default: IPCC AR5 medians)")
    p.add_argument("--timezone", help="IANA zone of naive timestamps in the CSVs (default: UTC)")
    p.add_argument("--peak-qps", type=float,
                   help="scale the load trace so that its peak is this many req/s "
                        "(default: the SLO load, 75%% of the all-new saturation)")
    p.add_argument("--step", default="1m", help="replay step, e.g. 30s, 1m, 5m (default: 1m)")
    p.add_argument("--start", help="where the load window starts: an offset (24h) or an ISO "
                                   "time (default: the trace's default window)")
    p.add_argument("--duration", help="length of the window, e.g. 1d, 7d (default: the trace's "
                                      "default window)")
    p.add_argument("--carbon-start", help="offset or ISO time in the carbon trace aligned with "
                                          "the load window's start (default: its first hour)")
    p.add_argument("--slo-ms", type=float, help="end-to-end p99 SLO in ms (default: from the "
                                                "profile, p99 of all-new at 75%% load)")
    p.add_argument("--policies", help="comma-separated subset of policies to run "
                                      "(default: all)")
    p.add_argument("--out", default="replay-out", type=Path,
                   help="folder for summary.csv, steps.csv, report.md and plots "
                        "(default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from ecoscale.replay.engine import replay
    from ecoscale.replay.policies import all_policies
    from ecoscale.replay.report import provenance_lines, summary_table, write_outputs
    from ecoscale.replay.scenario import ReplayOptions, build_scenario

    began = time.monotonic()
    scenario = build_scenario(ReplayOptions(
        app=args.app, profile=args.profile, hardware=args.hardware,
        load_trace=args.load_trace, load_column=args.load_column,
        carbon_trace=args.carbon_trace, carbon_column=args.carbon_column,
        carbon_factors=args.carbon_factors, timezone=args.timezone, peak_qps=args.peak_qps,
        step=args.step, start=args.start, duration=args.duration,
        carbon_start=args.carbon_start, slo_ms=args.slo_ms,
    ))
    table = None
    if args.table is not None:
        from ecoscale.adapters.files import load_table

        table = load_table(args.table)
        if table.app != scenario.model.topology.app:
            raise EcoscaleError(f"--table is for {table.app}, the replay is for "
                                f"{scenario.model.topology.app}")
    policies = all_policies(scenario, table)
    if args.policies:
        wanted = [name.strip() for name in args.policies.split(",") if name.strip()]
        known = {p.name for p in policies}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise EcoscaleError(f"unknown policies {', '.join(unknown)}; choose from "
                                f"{', '.join(sorted(known))}")
        policies = [p for p in policies if p.name in wanted]
    result = replay(scenario, policies)
    print(f"ecoscale replay: {scenario.model.topology.app}, {scenario.steps} steps of "
          f"{scenario.step_s:g} s, SLO {scenario.slo_ms:.2f} ms p99\n")
    print(summary_table(result))
    print("\nWhere the numbers come from:")
    print("\n".join(provenance_lines(result)))
    written = write_outputs(result, args.out, plots=not args.no_plots)
    print(f"\nwrote {len(written)} files to {args.out}/ in {time.monotonic() - began:.1f} s")
    return 0


PLAN_HELP = """\
Plan placements from a latency profile, the carbon constants and the SLO, and write the
policy table (YAML) that `ecoscale run` follows and `ecoscale replay --table` evaluates.

The search, as the EcoScale papers describe it: prune the services whose own p99 barely
rises on old servers at peak (non-critical: they stay on old), rank the rest by how much
end-to-end p99 rises when each alone runs on old, then per load level NoScale (move the
most critical to new until the SLO holds) and MinNew (put services back on old with up to
floor(C) replicas while the SLO holds and carbon falls). --ci-bands plans one ladder per
grid-intensity band with C at that intensity (C(t)). --oracle compares every level with the
exact optimum (MILP).
"""


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", default="socialNetwork",
                   help="shipped app (socialNetwork, hotelReservation, mediaMicroservices) or a "
                        "topology YAML path (default: %(default)s)")
    p.add_argument("--profile", default="default",
                   help="latency profile name under profiles/<app>/ or a YAML path "
                        "(default: 'lab', measured on the lab, when the app has one, else "
                        "'calibrated')")
    p.add_argument("--hardware", default="cloudlab",
                   help="hardware spec under profiles/hardware/ or a YAML path "
                        "(default: %(default)s)")


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="profiles + carbon constants + SLO -> policy table (YAML)",
                       description=PLAN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(p)
    p.add_argument("--slo-ms", type=float,
                   help="end-to-end p99 SLO in ms (default: from the profile, or p99 of "
                        "all-new at 75%% of its saturation)")
    p.add_argument("--peak-qps", type=float,
                   help="planning peak in req/s (default: the SLO load)")
    p.add_argument("--levels", default="0.1:1.0:0.05,1.1,1.2",
                   help="load levels as fractions of the peak: START:STOP:STEP ranges and "
                        "single values, comma-separated (default: %(default)s)")
    p.add_argument("--ci-bands",
                   help="plan a ladder per carbon-intensity band: comma-separated upper "
                        "limits in gCO2e/kWh, e.g. 150,250,350,inf (default: one ladder, "
                        "C at the hardware's reference intensity)")
    p.add_argument("--prune-threshold", type=float, default=0.05,
                   help="non-critical if own p99 rises less than this fraction of the SLO "
                        "on old at peak (default: %(default)s)")
    p.add_argument("--headroom", type=float, default=0.0,
                   help="share of the SLO kept free when planning: levels keep the modelled "
                        "p99 under SLO x (1 - HEADROOM), a margin for the profile's error "
                        "on the live system, e.g. 0.1 (default: %(default)s)")
    p.add_argument("--oracle", action="store_true",
                   help="also solve each level exactly (MILP) and print the greedy's gap")
    p.add_argument("--out", type=Path, default=Path("policy-table.yaml"),
                   help="where to write the table (default: %(default)s)")
    p.set_defaults(func=_cmd_plan)


def _parse_levels(text: str) -> list[float]:
    levels: set[float] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                start, stop, step = (float(x) for x in part.split(":"))
                if step <= 0 or stop < start:
                    raise ValueError
                count = int(round((stop - start) / step)) + 1
                levels.update(round(start + i * step, 6) for i in range(count))
            else:
                levels.add(float(part))
        except ValueError:
            raise EcoscaleError(f"--levels: '{part}' is neither a fraction nor "
                                "START:STOP:STEP") from None
    if not levels or min(levels) <= 0:
        raise EcoscaleError("--levels: need at least one fraction > 0")
    return sorted(levels)


def _parse_bands(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        bands = sorted(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EcoscaleError(f"--ci-bands: '{text}' is not a list of numbers") from None
    if not bands or bands[0] <= 0:
        raise EcoscaleError("--ci-bands: limits must be > 0 gCO2e/kWh")
    if bands[-1] != float("inf"):
        bands.append(float("inf"))
    return bands


def _cmd_plan(args: argparse.Namespace) -> int:
    from ecoscale.adapters.files import load_hardware, load_profile, load_topology, write_table
    from ecoscale.model.app import AppModel
    from ecoscale.model.carbon import carbon_constants
    from ecoscale.paths import shown
    from ecoscale.planner.report import plan_text
    from ecoscale.planner.table import build_table
    from ecoscale.replay.scenario import default_slo

    began = time.monotonic()
    topology = load_topology(args.app)
    profile = load_profile(args.app, args.profile)
    hardware = load_hardware(args.hardware)
    model = AppModel(topology, profile, hardware)
    slo_ms, slo_load, slo_how = default_slo(model, args.slo_ms)
    peak = args.peak_qps if args.peak_qps is not None else slo_load
    if not peak > 0:
        raise EcoscaleError(f"--peak-qps must be > 0, got {peak:g}")
    if not 0.0 <= args.headroom < 1.0:
        raise EcoscaleError(f"--headroom must be in [0, 1), got {args.headroom:g}")
    constants = carbon_constants(hardware)
    provenance = {
        "profile": f"{profile.name} ({profile.kind}): "
                   f"{profile.provenance.get('statement', '')}".strip(),
        "hardware": f"{hardware.name} ({shown(hardware.source)}); power modelled from the "
                    "hardware file's power curve",
        "carbon_constants": f"C at {constants.ci_g_per_kwh:g} gCO2e/kWh, "
                            f"{constants.utilisation:.0%} utilisation, PUE {constants.pue:g}: "
                            + ", ".join(f"C_{g}={c:.3f}" for g, c in constants.ratio.items()),
        "slo": f"{slo_ms:.3f} ms end-to-end p99, {slo_how}",
        "ecoscale_version": __version__,
    }
    table = build_table(model, slo_ms, peak, _parse_levels(args.levels),
                        ci_bands=_parse_bands(args.ci_bands),
                        prune_threshold=args.prune_threshold, provenance=provenance,
                        headroom=args.headroom)
    print(plan_text(model, table, oracle=args.oracle))
    write_table(args.out, table)
    print(f"\nwrote {args.out} in {time.monotonic() - began:.1f} s")
    return 0


RUN_HELP = """\
Run the daemon: every interval, read load and end-to-end p99 from Prometheus (the PromQL
queries your config names), the managed services from Docker Swarm (label
ecoscale.managed=true) and the grid carbon intensity; decide with the policy table from
`ecoscale plan` and the safety rules (latency SLO beats carbon; scale-up beats scale-down;
cooldowns; no data means hold); move and scale services with start-first updates.

Own metrics and health on http://127.0.0.1:9464/metrics and /healthz (configurable).
SIGTERM finishes the action in flight and exits 0; SIGHUP reloads the config and table (a
bad new config keeps the old one). A file at `pause_file` pauses all actions; the service
label ecoscale.paused=true pauses one service. Example config: deploy/daemon/ecoscale.yaml.
"""


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the long-running daemon that reschedules Swarm services",
                       description=RUN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="daemon config (YAML)")
    p.add_argument("--dry-run", action="store_true",
                   help="decide and log, never change the Swarm")
    p.add_argument("--once", action="store_true",
                   help="one observe-decide-act loop, then exit (1 if a source was missing)")
    p.add_argument("--check", action="store_true",
                   help="validate the config and table, print a summary, exit")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from ecoscale.daemon.main import load_all, run

    if args.check:
        from ecoscale.daemon import main as daemon_main
        from ecoscale.daemon.check import run_checks

        config, table, model = load_all(str(args.config))
        print(f"config ok: app {config.app}, table {config.table} ({len(table.levels)} levels, "
              f"SLO {table.slo_ms:.2f} ms), prometheus {config.prometheus.url}, interval "
              f"{config.interval_s:g} s, dry-run {config.dry_run}")
        results = run_checks(config, table, model, daemon_main.ADAPTERS)
        print("\n".join(r.line() for r in results))
        failed = [r.component for r in results if not r.ok]
        if failed:
            print(f"check FAILED: {', '.join(failed)}", file=sys.stderr)
            return 1
        print("check ok: every adapter built and answered")
        return 0
    return run(str(args.config), dry_run=args.dry_run, once=args.once)


PROFILE_HELP = """\
Characterise an application's services on each server generation of a pool, and write the
profile the planner reads (profiles/<app>/<pool>.yaml, raw measurements beside it as CSV).

The papers' sweeps: all-new (finds the saturation and sets the SLO at 75 % of it), all-old
(per-service p99 for the pruner), then each critical service alone on old at the SLO load
(criticality). Services move by their placement constraint; load is open-loop (Poisson).
Resumable: finished points are kept and not re-run. Ctrl-C puts the services back where
they were. --pool lab profiles the running `ecoscale lab`.
"""


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure services on a pool's generations -> profile",
                       description=PROFILE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", default="socialNetwork", help="app (default: %(default)s)")
    p.add_argument("--pool", required=True,
                   help="pool config YAML (frontend_url, prometheus_url, docker_host, "
                        "generations, slot_cpus, loads_qps, warmup_s, measure_s, "
                        "settle_per_move_s, emulation), "
                        "or 'lab' for the running ecoscale lab")
    p.add_argument("--loads", help="comma-separated front-end loads in req/s (overrides the "
                                   "pool's loads_qps)")
    p.add_argument("--warmup-s", type=float, help="warm-up before each window (s)")
    p.add_argument("--measure-s", type=float, help="measured window per point (s)")
    p.add_argument("--prune-threshold", type=float, default=0.05,
                   help="non-critical if its p99 on old exceeds its p99 on new at the "
                        "pruning load by less than this fraction of the SLO "
                        "(default: %(default)s)")
    p.add_argument("--out", type=Path,
                   help="profile file (default: profiles/<app>/<pool name>.yaml)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the experiment plan and its duration, run nothing")
    p.add_argument("--refit", action="store_true",
                   help="fit the profile again from the raw CSV beside it, measure nothing")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from ecoscale.profiler.main import pool_overrides, run_profile

    return run_profile(args.app, args.pool, args.out, args.dry_run, pool_overrides(args),
                       args.prune_threshold, refit=args.refit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecoscale",
        description="Carbon-aware microservice autoscaler: places the services that tolerate "
                    "older servers on them while keeping the end-to-end tail-latency SLO.",
    )
    parser.add_argument("--version", action="version", version=f"ecoscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_replay(sub)
    _add_plan(sub)
    _add_run(sub)
    _add_profile(sub)
    register_lab(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EcoscaleError as exc:
        print(f"ecoscale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ecoscale {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
