"""The `ecoscale` command: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecoscale import __version__
from ecoscale.adapters.files import DEFAULT_PROFILE
from ecoscale.cli.flags import duration_flag
from ecoscale.cli.lab import register as register_lab
from ecoscale.cli.output import Reporter, add_output_options, checked_out_file
from ecoscale.cli.topology import register as register_topology
from ecoscale.errors import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    EcoscaleError,
    UsageError,
    exit_codes_help,
)
from ecoscale.values import BadNumber, flag, integer_flag, parse_number_text

REPLAY_HELP = """\
Replay a load trace and a grid carbon-intensity trace through each placement policy and
compare carbon (embodied + operational, kgCO2e) and time in SLO violation.

With no arguments: socialNetwork with its calibrated profile on the EcoScale papers'
CloudLab servers (`--profile calibrated`; `--profile lab` replays the one measured on the
lab), one day of the WorldCup98 trace (1998-07-01, UTC) scaled so that its peak is the SLO
load, California (CISO) carbon intensity from 2022-01-01, one-minute steps.

policies (--policies, comma-separated; default: all):
{policies}
"""

POLICY_HELP = {
    "all-new": "one replica of every service on new servers (the reference for savings)",
    "all-old": "one replica of every service on old (second-life) servers",
    "hpa-cpu": "Kubernetes HPA's CPU rule (target 60 %) on new servers",
    "carbon-ceiling": "hpa-cpu under a replica ceiling set by the grid intensity (KEDA)",
    "right-sized-new": "new servers, replicas right-sized and packed at 70 % of a socket "
                       "(the second reference)",
    "noscale": "the papers' greedy without scaling, planned once for the peak",
    "minnew": "the papers' carbon-aware scaling, planned once for the peak",
    "ecoscale": "the policy table by load, driven by the daemon's decision function",
    "ecoscale-ct": "the same with a C(t)-aware table (one ladder per carbon band)",
    "ecoscale-packed": "ecoscale's placements right-sized and packed per generation",
    "oracle": "the exact least-carbon placement per step (MILP): a bound",
    "oracle-packed": "the exact least-carbon right-sized packing per step (MILP; only when "
                     "named: minutes), shown where it finishes",
}
REFERENCE_POLICY = "all-new"
RIGHT_SIZED_REFERENCE = "right-sized-new"
"""Runs in every replay too (the second savings column); a row only when asked for."""


def _policy_list() -> str:
    from ecoscale.replay.policies import POLICY_NAMES

    return "\n".join(f"  {name:<15} {POLICY_HELP.get(name, '')}" for name in POLICY_NAMES)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="evaluate carbon and SLO of placement policies on traces",
                       description=REPLAY_HELP.format(policies=_policy_list()),
                       epilog=exit_codes_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(p)
    p.add_argument("--table", type=Path,
                   help="policy table from `ecoscale plan` for the ecoscale policy; a "
                        "right-sized one (`plan --right-size`) is what ecoscale-packed runs, "
                        "and ecoscale runs its ladder on dedicated slots (default: planned "
                        "here for the replayed peak)")
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
    p.add_argument("--peak-qps", type=flag("--peak-qps", above=0, maximum=MAX_QPS),
                   help="scale the load trace so that its peak is this many req/s "
                        "(default: the SLO load, 75%% of the all-new saturation)")
    p.add_argument("--step", default="1m",
                   help="replay step with a unit, e.g. 30s, 1m, 5m; a bare number is in "
                        "seconds (default: 1m)")
    p.add_argument("--start", help="where the load window starts: an offset from the trace's "
                                   "start (24h, 90m; a bare number is in seconds) or an ISO "
                                   "time (1998-07-01T06:00, UTC unless it says) (default: the "
                                   "trace's default window)")
    p.add_argument("--duration", help="length of the window with a unit, e.g. 6h, 1d, 7d; a "
                                      "bare number is in seconds (default: the trace's default "
                                      "window)")
    p.add_argument("--carbon-start", help="offset or ISO time in the carbon trace aligned with "
                                          "the load window's start (default: its first hour)")
    p.add_argument("--slo-ms", type=flag("--slo-ms", above=0, maximum=MAX_SLO_MS),
                   help="end-to-end p99 SLO in ms (default: from the "
                                                "profile, p99 of all-new at 75%% load)")
    p.add_argument("--trend-periods",
                   type=integer_flag("--trend-periods", minimum=0, maximum=100), default=0,
                   help="ecoscale's trend-aware load estimate (control.trend_periods): its "
                        "window in steps; 0: off (default: %(default)s)")
    p.add_argument("--policies", help="comma-separated subset of the policies listed above "
                                      "(default: all); all-new always runs too, as the "
                                      "reference for savings")
    p.add_argument("--out", default="replay-out", type=Path,
                   help="folder for summary.csv, steps.csv, report.md and plots; an earlier "
                        "run's files there are replaced or removed (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_output_options(p)
    p.set_defaults(func=_cmd_replay)


def _wanted_policies(text: str | None) -> tuple[list[str], list[str]]:
    """(policies to run, notes) from --policies; UsageError naming unknown ones."""
    from ecoscale.replay.policies import DEFAULT_POLICY_NAMES, POLICY_NAMES

    if not text:
        return list(DEFAULT_POLICY_NAMES), []
    wanted = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in wanted if name not in POLICY_NAMES]
    if unknown or not wanted:
        raise UsageError(f"--policies: unknown policies {', '.join(unknown) or '(empty list)'}"
                         f"; choose from {', '.join(POLICY_NAMES)}")
    notes = []
    if REFERENCE_POLICY not in wanted:
        wanted.insert(0, REFERENCE_POLICY)
        notes.append(f"--policies: {REFERENCE_POLICY} runs too, as the reference for savings")
    if RIGHT_SIZED_REFERENCE not in wanted:
        notes.append(f"--policies: {RIGHT_SIZED_REFERENCE} runs too, as the second reference "
                     "for savings (without a row)")
    return wanted, notes


def _cmd_replay(args: argparse.Namespace) -> int:
    from ecoscale.adapters.outputs import check_out_dir, write_dir
    from ecoscale.control.decide import ControlSettings
    from ecoscale.model.trace import parse_duration_s
    from ecoscale.replay.engine import replay
    from ecoscale.replay.policies import all_policies
    from ecoscale.replay.report import (
        OUTPUT_NAMES,
        provenance_lines,
        summary_table,
        write_outputs,
    )
    from ecoscale.replay.scenario import ReplayOptions, build_scenario

    out = Reporter(args)
    began = time.monotonic()
    wanted, notes = _wanted_policies(args.policies)
    parse_duration_s(args.step, "--step")
    if args.duration is not None:
        parse_duration_s(args.duration, "--duration")
    plots = not args.no_plots
    expected = [n for n in OUTPUT_NAMES if plots or not n.endswith(".png")]
    out_dir = check_out_dir(args.out, OUTPUT_NAMES, expected)
    for note in notes + out_dir.notes():
        out.note(note)
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
        from ecoscale.model.app import check_table_fits

        table = load_table(args.table)
        check_table_fits(table, scenario.model, str(args.table))
        if table.app != scenario.model.topology.app:
            raise UsageError(f"--table {args.table} is for {table.app}, the replay is for "
                             f"{scenario.model.topology.app}; give --app {table.app} or "
                             "another table")
    references = ([] if RIGHT_SIZED_REFERENCE in wanted
                  else all_policies(scenario, names=(RIGHT_SIZED_REFERENCE,)))
    settings = ControlSettings(trend_periods=args.trend_periods)
    policy_notes: list[str] = []
    policies = all_policies(scenario, table, names=tuple(wanted), settings=settings,
                            notes=policy_notes)
    for note in policy_notes:
        out.note(note)
    result = replay(scenario, policies, references)
    out.text(f"ecoscale replay: {scenario.model.topology.app} ({scenario.model.profile.name} "
             f"profile), SLO {scenario.slo_ms:.2f} ms p99\n{scenario.steps} steps of "
             f"{scenario.step_s:g} s{_window_text(scenario)}\n")
    out.text(summary_table(result))
    out.text("\nWhere the numbers come from:")
    out.text("\n".join(textwrap.fill(line, width=100, subsequent_indent="  ",
                                      break_on_hyphens=False, break_long_words=False)
                        for line in provenance_lines(result)))
    written = write_dir(out_dir, lambda folder: write_outputs(result, folder, plots=plots))
    out.data(_replay_data(result, args, written))
    out.text(f"\nwrote {len(written)} files to {args.out}/ in "
             f"{time.monotonic() - began:.1f} s")
    return 0


def _window_text(scenario: Any) -> str:
    """': 1998-07-01 00:00 .. 07-01 23:59 UTC': the replayed window (first to last step)."""
    import datetime as dt

    if not scenario.start:
        return ""
    first = dt.datetime.fromisoformat(scenario.start).astimezone(dt.UTC)
    last = first + dt.timedelta(seconds=(scenario.steps - 1) * scenario.step_s)
    shape = "%m-%d %H:%M" if last.year == first.year else "%Y-%m-%d %H:%M"
    return f": {first:%Y-%m-%d %H:%M} .. {last.strftime(shape)} UTC"


def _replay_data(result: Any, args: argparse.Namespace, written: list[Path]) -> dict[str, Any]:
    """The replay's summary rows and what it ran on, for --json."""
    scenario = result.scenario
    minutes = scenario.steps * scenario.step_s / 60.0
    rows = []
    for row in result.summary().to_dict(orient="records"):
        row["slo_violation_min"] = row["slo_violation_pct"] / 100 * minutes
        rows.append(row)
    return {
        "app": scenario.model.topology.app,
        "profile": scenario.model.profile.name,
        "steps": scenario.steps,
        "step_s": scenario.step_s,
        "start": scenario.start,
        "slo_ms": scenario.slo_ms,
        "reference": REFERENCE_POLICY,
        "rows": rows,
        "provenance": dict(scenario.provenance),
        "out": str(args.out),
        "files": [p.name for p in written],
    }


PLAN_HELP = """\
Plan placements from a latency profile, the carbon constants and the SLO, and write the
policy table (YAML) that `ecoscale run` follows and `ecoscale replay --table` evaluates.

The search, as the EcoScale papers describe it: prune the services whose own p99 barely
rises on old servers at peak (non-critical: they stay on old), rank the rest by how much
end-to-end p99 rises when each alone runs on old, then per load level NoScale (move the
most critical to new until the SLO holds) and MinNew (put services back on old with up to
floor(C) replicas while the SLO holds and carbon falls). --ci-bands plans one ladder per
grid-intensity band with C at that intensity (C(t)). --oracle compares every level with the
exact optimum (MILP). --right-size plans what the replay's ecoscale-packed runs: per level,
generation, replicas and each replica's share of a socket, packed onto the fewest sockets
of each generation at a target utilisation; the text and --json list each level's sockets
and shares, and `ecoscale run` and `ecoscale replay --table` read them from the table.
"""


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", default="socialNetwork",
                   help="shipped app (socialNetwork, hotelReservation, mediaMicroservices) or a "
                        "topology YAML path (default: %(default)s)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help="latency profile name under profiles/<app>/ or a YAML path: "
                        "'calibrated' (the papers' servers) or 'lab' (measured on `ecoscale "
                        "lab`) (default: %(default)s)")
    p.add_argument("--hardware", default="cloudlab",
                   help="hardware spec under profiles/hardware/ or a YAML path "
                        "(default: %(default)s)")


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="profiles + carbon constants + SLO -> policy table (YAML)",
                       description=PLAN_HELP,
                       epilog=exit_codes_help(
                           "  1  also with --strict: a level within the planning peak misses "
                           "the SLO or the headroom"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(p)
    p.add_argument("--slo-ms", type=flag("--slo-ms", above=0, maximum=MAX_SLO_MS),
                   help="end-to-end p99 SLO in ms (default: from the profile, or p99 of "
                        "all-new at 75%% of its saturation)")
    p.add_argument("--peak-qps", type=flag("--peak-qps", above=0, maximum=MAX_QPS),
                   help="planning peak in req/s (default: the SLO load)")
    p.add_argument("--levels", default="0.1:1.0:0.05,1.1,1.2",
                   help="load levels as fractions of the peak: START:STOP:STEP ranges and "
                        "single values, comma-separated (default: %(default)s)")
    p.add_argument("--ci-bands",
                   help="plan a ladder per carbon-intensity band: comma-separated upper "
                        "limits in gCO2e/kWh, e.g. 150,250,350,inf (default: one ladder, "
                        "C at the hardware's reference intensity)")
    p.add_argument("--prune-threshold", type=flag("--prune-threshold", minimum=0, maximum=1),
                   default=0.05,
                   help="non-critical if own p99 rises less than this fraction of the SLO "
                        "on old at peak (default: %(default)s)")
    p.add_argument("--headroom", type=flag("--headroom", minimum=0, below=1), default=0.0,
                   help="share of the SLO kept free when planning: levels keep the modelled "
                        "p99 under SLO x (1 - HEADROOM), a margin for the profile's error "
                        "on the live system, e.g. 0.1 (default: %(default)s)")
    p.add_argument("--oracle", action="store_true",
                   help="also solve each level exactly (MILP) and print the greedy's gap")
    p.add_argument("--right-size", action="store_true",
                   help="right-size every level (the replay's ecoscale-packed): choose "
                        "generation, replicas and each replica's CPU share of a socket (its "
                        "Swarm CPU reservation, sized from its utilisation) together, and "
                        "pack the replicas of each generation first-fit decreasing onto "
                        "sockets at a target utilisation (50-100 %%, the least carbon that "
                        "keeps the SLO under the co-location model); the table then carries "
                        "each service's share and each level's sockets (default: one "
                        "dedicated socket per replica, the papers' slots)")
    p.add_argument("--out", type=Path, default=Path("policy-table.yaml"),
                   help="where to write the table, checked before planning; a file git "
                        "tracks is written beside, as NAME.new.yaml, unless --force "
                        "(default: %(default)s)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1, and write no table, if a level within the planning peak "
                        "misses the SLO or the headroom target (default: warn on stderr)")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out even if git tracks it (default: write beside it)")
    add_output_options(p)
    p.set_defaults(func=_cmd_plan)


MAX_QPS = 1e9
"""Highest request rate a flag accepts (req/s)."""
MAX_SLO_MS = 3_600_000.0
"""Longest SLO a flag accepts (ms): an hour."""
MAX_CI_G_PER_KWH = 3000.0
"""Highest finite --ci-bands limit (the loaders' bound on grid intensity)."""
MAX_LEVELS = 1000
"""Most load levels (or intensity bands) a table may be planned for."""


def _parse_levels(text: str) -> list[float]:
    """'0.1:1.0:0.05,1.1,1.2' -> sorted fractions of the peak (> 0, <= 10); UsageError."""
    levels: set[float] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                pieces = part.split(":")
                if len(pieces) != 3:
                    raise BadNumber("")
                start, stop, step = (parse_number_text(x, "--levels", above=0, maximum=10)
                                     for x in pieces)
                if stop < start:
                    raise UsageError(f"--levels: in '{part}' STOP is below START; write "
                                     "START:STOP:STEP with START <= STOP")
                count = int(round((stop - start) / step)) + 1
                if count > MAX_LEVELS:
                    raise UsageError(f"--levels: '{part}' makes {count} levels, more than "
                                     f"{MAX_LEVELS}; use a larger STEP")
                levels.update(round(start + i * step, 6) for i in range(count))
            else:
                levels.add(parse_number_text(part, "--levels", above=0, maximum=10))
        except BadNumber as exc:
            detail = f" ({str(exc).removeprefix('--levels ')})" if str(exc) else ""
            raise UsageError(f"--levels: '{part}' is neither a fraction of the peak in (0, 10] "
                             f"nor START:STOP:STEP{detail}") from None
    if not levels:
        raise UsageError("--levels: need at least one fraction > 0")
    if len(levels) > MAX_LEVELS:
        raise UsageError(f"--levels: {len(levels)} levels, more than {MAX_LEVELS}")
    return sorted(levels)


def _parse_bands(text: str | None) -> list[float] | None:
    """'150,250,350' -> ascending band limits (gCO2e/kWh, >= 1), inf appended; UsageError."""
    if text is None:
        return None
    try:
        bands = sorted({parse_number_text(x, "--ci-bands", minimum=1, allow_inf=True)
                        for x in text.split(",") if x.strip()})
    except BadNumber as exc:
        detail = str(exc).removeprefix("--ci-bands ")
        raise UsageError(f"--ci-bands: {detail}; give comma-separated limits in gCO2e/kWh, "
                         "e.g. 150,250,350") from None
    if not bands:
        raise UsageError("--ci-bands: give comma-separated limits in gCO2e/kWh, e.g. "
                         "150,250,350")
    if any(math.isfinite(b) and b > MAX_CI_G_PER_KWH for b in bands):
        raise UsageError(f"--ci-bands: limits must be <= {MAX_CI_G_PER_KWH:g} gCO2e/kWh (no "
                         "grid is dirtier) or inf, got "
                         f"{max(b for b in bands if math.isfinite(b)):g}")
    if len(bands) > MAX_LEVELS:
        raise UsageError(f"--ci-bands: {len(bands)} bands, more than {MAX_LEVELS}")
    if bands[-1] != float("inf"):
        bands.append(float("inf"))
    return bands


def _cmd_plan(args: argparse.Namespace) -> int:
    from ecoscale.adapters.files import load_hardware, load_profile, load_topology, write_table
    from ecoscale.model.app import AppModel, default_slo
    from ecoscale.model.carbon import carbon_constants
    from ecoscale.paths import shown
    from ecoscale.planner.report import level_rows, plan_data, plan_text, plan_warnings
    from ecoscale.planner.table import build_table

    out = Reporter(args)
    began = time.monotonic()
    levels = _parse_levels(args.levels)
    bands = _parse_bands(args.ci_bands)
    destination = checked_out_file(args.out, args.force, out)
    topology = load_topology(args.app)
    profile = load_profile(args.app, args.profile)
    hardware = load_hardware(args.hardware)
    model = AppModel(topology, profile, hardware)
    slo_ms, slo_load, slo_how = default_slo(model, args.slo_ms)
    peak = args.peak_qps if args.peak_qps is not None else slo_load
    if not peak > 0:
        raise UsageError(f"--peak-qps must be > 0, got {peak:g}")
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
    table = build_table(model, slo_ms, peak, levels, ci_bands=bands,
                        prune_threshold=args.prune_threshold, provenance=provenance,
                        headroom=args.headroom, right_size=args.right_size)
    rows = level_rows(model, table, oracle=args.oracle)
    out.text(plan_text(model, table, rows=rows))
    warnings = plan_warnings(table, rows)
    document = plan_data(table, rows)
    document["profile"] = profile.name
    if warnings and args.strict:
        document["out"] = None
        out.data(document)
        raise EcoscaleError("--strict: " + "; ".join(warnings)
                            + f"; no table written to {destination}")
    for warning in warnings:
        out.warn(warning)
    write_table(destination, table)
    document["out"] = str(destination)
    out.data(document)
    out.text(f"\nwrote {destination} in {time.monotonic() - began:.1f} s")
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
                       epilog=exit_codes_help("  1  also with --once: a source was missing"),
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


ADOPT_HELP = """\
Report how the target's name mapping finds an app's services in a Swarm that someone else
deployed (`docker stack deploy -c FILE STACK`): per topology service, the Swarm service it
maps to, its current generation (its constraint, or "(tasks)": where its tasks run), running
and desired replicas and its update order; then the topology services that map to nothing
(with the `services:` entry that fixes each) and the Swarm services of the stack that the
topology does not name (left alone). Reads only; changes nothing.

The mapping is the config's `target:` section: `stack: STACK` (the Swarm service of
topology service x is STACK_x) and/or `services: {x: swarm-name}` (wins for the names it
lists); services labelled ecoscale.managed=true are managed too.
"""


def _add_adopt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adopt", help="how a deployed stack's services map to the topology",
                       description=ADOPT_HELP,
                       epilog=exit_codes_help("  1  also: a topology service is unmapped"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path,
                        help="daemon config (YAML): its app, target: and labels:")
    source.add_argument("--pool", help="pool config (YAML) of `ecoscale profile`: its target: "
                                       "(the app from --app)")
    p.add_argument("--app", default="socialNetwork",
                   help="with --pool: the app whose topology is mapped (default: %(default)s)")
    add_output_options(p)
    p.set_defaults(func=_cmd_adopt)


def _cmd_adopt(args: argparse.Namespace) -> int:
    from ecoscale.adapters.files import load_config, load_topology
    from ecoscale.adapters.targets import adoption, build_target, describe_target
    from ecoscale.config import LabelConfig

    out = Reporter(args)
    if args.config is not None:
        from ecoscale.daemon import main as daemon_main

        config = load_config(args.config)
        app, target, labels = config.app, config.target, config.labels
        orchestrator = daemon_main.ADAPTERS.orchestrator(config)
    else:
        from ecoscale.profiler.main import load_pool

        pool = load_pool(args.pool, {}, {"lab": _lab_pool})
        app, target, labels = args.app, pool.target, LabelConfig()
        orchestrator = build_target(target, labels, args.pool)
    topology = load_topology(app)
    state = orchestrator.read()
    where = describe_target(target)
    if not state.is_controller:
        raise EcoscaleError(f"{where} is not a Swarm manager: point target.docker_host at a "
                            "manager's socket (`docker node ls` works there)")
    report = adoption(topology.service_names, state, target, labels)
    out.data({"app": topology.app, "target": where, **report.as_dict()})
    out.text(f"{topology.app} on {where}")
    out.text("\n".join(report.lines()))
    if not report.ok:
        print(f"ecoscale adopt: error: {report.problem()}; {report.fix()}", file=sys.stderr)
        return 1
    return 0


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
                       description=PROFILE_HELP, epilog=exit_codes_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", default="socialNetwork", help="app (default: %(default)s)")
    p.add_argument("--pool", required=True,
                   help="pool config YAML (frontend_url, prometheus_url, target: {kind, "
                        "docker_host, stack, services}, queries, generations, slot_cpus, "
                        "loads_qps, warmup_s, measure_s, settle_per_move_s, emulation), "
                        "or 'lab' for the running ecoscale lab")
    p.add_argument("--loads", help="comma-separated front-end loads in req/s (overrides the "
                                   "pool's loads_qps)")
    p.add_argument("--warmup-s", type=duration_flag("--warmup-s", positive=False),
                   help="warm-up before each window, e.g. 20s, 1m; a bare number is in seconds "
                        "(default: the pool's warmup_s)")
    p.add_argument("--measure-s", type=duration_flag("--measure-s"),
                   help="measured window per point, e.g. 30s, 2m; a bare number is in seconds "
                        "(default: the pool's measure_s)")
    p.add_argument("--prune-threshold", type=flag("--prune-threshold", minimum=0, maximum=1),
                   default=0.05,
                   help="non-critical if its p99 on old exceeds its p99 on new at the "
                        "pruning load by less than this fraction of the SLO "
                        "(default: %(default)s)")
    p.add_argument("--out", type=Path,
                   help="profile file (default: profiles/<app>/<pool name>.yaml; if git "
                        "tracks it, <pool name>.measured.yaml or, with --refit, "
                        "<pool name>.refit.yaml beside it, unless --force)")
    p.add_argument("--force", action="store_true",
                   help="overwrite the profile even if git tracks it")
    p.add_argument("--dry-run", action="store_true",
                   help="print the experiment plan and its duration, run nothing")
    p.add_argument("--refit", action="store_true",
                   help="fit the profile again from the raw CSV beside it, measure nothing")
    p.add_argument("--check", action="store_true",
                   help="ask the target (the adoption report) and Prometheus (each role "
                        "query once) and exit, measuring nothing; 1 if a check fails")
    p.set_defaults(func=_cmd_profile)


def _lab_pool(overrides: dict[str, Any]) -> Any:
    """``--pool lab``: the running lab (imported only then: it needs docker-py)."""
    from ecoscale.lab.pool import lab_pool

    return lab_pool(overrides)


def _cmd_profile(args: argparse.Namespace) -> int:
    from ecoscale.profiler.main import check_pool, pool_overrides, run_profile

    if args.check:
        return check_pool(args.app, args.pool, pool_overrides(args), {"lab": _lab_pool})
    return run_profile(args.app, args.pool, args.out, args.dry_run, pool_overrides(args),
                       args.prune_threshold, refit=args.refit, force=args.force,
                       named_pools={"lab": _lab_pool})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecoscale",
        description="Carbon-aware microservice autoscaler: places the services that tolerate "
                    "older servers on them while keeping the end-to-end tail-latency SLO.",
        epilog=exit_codes_help() + "\n\n`ecoscale COMMAND --help` describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ecoscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_replay(sub)
    _add_plan(sub)
    _add_run(sub)
    _add_profile(sub)
    _add_adopt(sub)
    register_lab(sub)
    register_topology(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 on success, 1 on a runtime error, 2 on a usage error."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # argparse: --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command = " ".join(part for part in (args.command, getattr(args, "lab_command", None),
                                         getattr(args, "topology_command", None)) if part)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"ecoscale {command}: error: {exc}\n(see `ecoscale {command} --help`)",
              file=sys.stderr)
        return EXIT_USAGE
    except EcoscaleError as exc:
        print(f"ecoscale {command}: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print(f"ecoscale {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
