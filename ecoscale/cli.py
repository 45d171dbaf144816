"""The `ecoscale` command: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ecoscale import __version__
from ecoscale.errors import EcoscaleError

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
    p.add_argument("--app", default="socialNetwork",
                   help="shipped app (socialNetwork, hotelReservation, mediaMicroservices) or a "
                        "topology YAML path (default: %(default)s)")
    p.add_argument("--profile", default="calibrated",
                   help="latency profile name under profiles/<app>/ or a YAML path "
                        "(default: %(default)s)")
    p.add_argument("--hardware", default="cloudlab",
                   help="hardware spec under profiles/hardware/ or a YAML path "
                        "(default: %(default)s)")
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
    from ecoscale.replay.report import provenance_lines, table, write_outputs
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
    policies = all_policies(scenario)
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
    print(table(result))
    print("\nWhere the numbers come from:")
    print("\n".join(provenance_lines(result)))
    written = write_outputs(result, args.out, plots=not args.no_plots)
    print(f"\nwrote {len(written)} files to {args.out}/ in {time.monotonic() - began:.1f} s")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
