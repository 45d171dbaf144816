"""``ecoscale lab``: bring the one-machine Swarm lab up and down, deploy apps, drive load.

Argument parsing and wiring only; the work is in ``ecoscale.lab``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ecoscale.cli.flags import duration_flag
from ecoscale.errors import EcoscaleError, InputError, UsageError, exit_codes_help
from ecoscale.evaluation.colocation_settings import (
    DEFAULT_LOADS_QPS,
    DEFAULT_MEASURE_S,
    DEFAULT_SERVICES,
    DEFAULT_WARMUP_S,
)
from ecoscale.evaluation.colocation_settings import OUTPUTS as COLOCATION_OUTPUTS
from ecoscale.evaluation.moves import DEFAULT_MOVES, DEFAULT_WINDOW_S
from ecoscale.evaluation.timescale import LAB_MOVE_TIME_S, LIVE_TREND_PERIODS
from ecoscale.lab.config import SLOT_CPUS, LabConfig
from ecoscale.model.trace import check_window
from ecoscale.values import BadNumber, flag, integer_flag, parse_number_text

LAB_HELP = """\
A real multi-node Docker Swarm on this machine (root needed): one Docker engine per emulated
server, old and new generations, the emulated DeathStarBench apps and Prometheus.

Old and new servers are EMULATED: every node is a Docker engine on this machine's CPUs. An
older generation runs the emulated services' CPU work slower by a per-core speed factor and
gets a CFS CPU quota on the cgroup holding all its containers (`ecoscale lab status` shows
the knobs and factors in force). With `lab up --slot-cpus 0.05 --old-node-cpus 0` a replica
is a slot instead: every task of a managed service runs with a Swarm CPU limit and
reservation of 0.05 host CPUs, so replicas add capacity on every generation and services do
not queue behind each other while the slots fit the machine (`lab status` prints the
budget; a deploy or placement that would overcommit it is refused).

  ecoscale lab up                      # 1 new node (Swarm manager) + 1 old node
  ecoscale lab deploy socialNetwork    # one Swarm service per microservice, all on 'new'
  ecoscale lab load --rate 100 --duration 30
  ecoscale lab status
  ecoscale lab down                    # removes everything, also after a crash
"""

UP_HELP = """\
Bring the lab up (idempotent: does nothing if it is already up as asked). First clears
whatever an earlier run left, installs missing Debian packages (docker.io, prometheus,
iproute2), starts one dockerd per node (the manager in the host's network namespace, every
other node in its own), forms the Swarm, labels nodes ecoscale.generation=<new|old>, builds
and copies the emulator image, creates the overlay network and starts Prometheus.
"""

LOAD_HELP = """\
Open-loop load (Poisson arrivals, wrk2-style: latency counts from each request's intended
send time, so queueing is included) against the lab's entry point, with the deployed app's
endpoint mix. Prints client-side percentiles. A constant --rate for --duration seconds, or a
schedule: --schedule 50,100,150 (one rate per --step-s seconds), or a shipped load trace
compressed in time: --trace worldcup98 --peak-qps 150 --step-s 1 --steps 60 (each trace step
lasts --step-s seconds).
"""


class _RawWithDefaults(argparse.RawDescriptionHelpFormatter,
                       argparse.ArgumentDefaultsHelpFormatter):
    """Description and epilog as written, and every flag's default in its help (a flag
    whose default is None says in its own words what it falls back to)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ecoscale lab`` and its subcommands to the ``ecoscale`` command."""
    lab = subparsers.add_parser(
        "lab", help="a real multi-node Docker Swarm on this machine, with emulated old/new "
                    "servers, the emulated apps and Prometheus",
        description=LAB_HELP, epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    lab.add_argument("--state-dir", type=Path,
                     help="the lab's folder (default: $ECOSCALE_LAB_DIR or "
                          "/var/tmp/ecoscale-lab)")
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True

    up = sub.add_parser("up", help="bring the lab up (root)", description=UP_HELP,
                        epilog=exit_codes_help(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--new-nodes", type=integer_flag("--new-nodes", minimum=1, maximum=64),
                    default=1,
                    help="nodes of the 'new' generation; the first is the Swarm manager "
                         "(default: %(default)s)")
    up.add_argument("--old-nodes", type=integer_flag("--old-nodes", minimum=0, maximum=64),
                    default=1,
                    help="nodes of the 'old' generation (default: %(default)s)")
    up.add_argument("--old-cpu-factor", type=flag("--old-cpu-factor", minimum=0.05, maximum=1),
                    default=0.5,
                    help="per-core speed of an old node relative to this machine's CPUs: the "
                         "emulated services burn cpu_ms / F of CPU per request there "
                         "(default: %(default)s)")
    up.add_argument("--slot-cpus", type=flag("--slot-cpus", minimum=0, maximum=64),
                    default=0.0,
                    help="a replica is a slot: the CPU limit and reservation of every task "
                         "of a managed service, in host CPUs, on both generations (e.g. "
                         f"{SLOT_CPUS:g}, with --old-node-cpus 0); 0: tasks without a limit "
                         "(default: %(default)s)")
    up.add_argument("--kept-cpus", type=flag("--kept-cpus", minimum=0, maximum=4096),
                    default=LabConfig.kept_cpus,
                    help="host CPUs kept out of the slot budget for dockerd, Prometheus, the "
                         "gateway and the load generator (default: %(default)s)")
    up.add_argument("--old-node-cpus", type=flag("--old-node-cpus", minimum=0, maximum=4096),
                    default=1.0,
                    help="CPU capacity of one old node in host CPUs, a CFS quota shared by "
                         "all its services; 0: no node-wide quota (default: %(default)s)")
    up.add_argument("--no-install", action="store_true",
                    help="do not apt-get install missing packages; fail instead")
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", help="tear everything down, leaving nothing behind (root)",
                          description="Leave the Swarm, stop every engine by its pidfile, "
                                      "delete the network namespaces, links, cgroups, mounts "
                                      "and the lab's folder. Works after a crash.",
                          epilog=exit_codes_help(),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    down.set_defaults(func=_cmd_down)

    status = sub.add_parser("status", help="nodes, emulation and where each service runs",
                            description="Show the nodes (generation, ready, emulation knobs), "
                                        "the services and the node of each of their tasks.",
                            epilog=exit_codes_help(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_cmd_status)

    deploy = sub.add_parser(
        "deploy", help="run an app: one Swarm service per microservice (root)",
        description="Deploy an emulated app as one Swarm service per microservice (named as "
                    "in its topology, labelled ecoscale.managed=true), all on the 'new' "
                    "generation, plus the gateway that is the lab's entry point. Replaces a "
                    "previously deployed app; waits until every task runs, answers and is "
                    "scraped by Prometheus.",
        epilog=exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    deploy.add_argument("app", help="socialNetwork, hotelReservation, mediaMicroservices, or a "
                                    "topology YAML path")
    deploy.add_argument("--emulation", type=Path,
                        help="emulation parameters (default: emulation.yaml beside the "
                             "topology)")
    deploy.set_defaults(func=_cmd_deploy)

    serve = sub.add_parser(
        "serve-stack", help="prepare the lab for `docker stack deploy` of an app (root)",
        description="Prepare the lab for a stack that you deploy yourself with `docker stack "
                    "deploy -c FILE STACK` (deploy/examples/socialnetwork-swarm.yml): write the "
                    "app document its services read, start an entry point to its front end, "
                    "make Prometheus scrape its services and re-expose them as OpenTelemetry "
                    "spanmetrics and cAdvisor series. Removes the lab's own app first (its "
                    "services carry the same names). Prints the environment of the deploy as "
                    "`export` lines: eval \"$(ecoscale lab serve-stack socialnetwork)\". With "
                    "--wait, waits until the deployed stack runs, answers and is scraped.",
        epilog=exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("stack", help="the STACK of `docker stack deploy` (e.g. socialnetwork)")
    serve.add_argument("--app", default="socialNetwork", help="the app the stack runs "
                                                              "(default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080,
                       help="the front end's published port, SOCIALNETWORK_PORT "
                            "(default: %(default)s)")
    serve.add_argument("--wait", action="store_true",
                       help="only wait until the deployed stack is ready")
    serve.set_defaults(func=_cmd_serve_stack)

    load = sub.add_parser("load", help="drive open-loop load and print client-side "
                                       "percentiles", description=LOAD_HELP,
                          epilog=exit_codes_help("  1  also: some requests failed"),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    load.add_argument("--rate", type=flag("--rate", above=0, maximum=1e6),
                      help="constant rate (req/s)")
    load.add_argument("--duration", type=duration_flag("--duration"),
                      help="how long to send at --rate, e.g. 30s, 5m; a bare number is in "
                           "seconds")
    load.add_argument("--schedule", help="comma-separated rates (req/s), one per --step-s")
    load.add_argument("--trace", help="shipped load trace (worldcup98, google2011) or a CSV "
                                      "path, scaled so that its peak in the window is "
                                      "--peak-qps")
    load.add_argument("--peak-qps", type=flag("--peak-qps", above=0, maximum=1e6),
                      help="peak rate of the scaled --trace (req/s)")
    load.add_argument("--trace-start", type=duration_flag("--trace-start", positive=False),
                      default=0.0,
                      help="offset into the trace in trace time, e.g. 6h; a bare number is in "
                           "seconds (default: 0)")
    load.add_argument("--steps", type=integer_flag("--steps", minimum=1, maximum=1_000_000),
                      help="trace steps to replay (default: all)")
    load.add_argument("--step-s", type=duration_flag("--step-s"), default=1.0,
                      help="wall time per schedule or trace step, e.g. 1s, 500ms; a bare "
                           "number is in seconds (default: %(default)s)")
    load.add_argument("--seed", type=integer_flag("--seed", minimum=0, maximum=2**32 - 1),
                      default=0, help="random seed (default: 0)")
    load.add_argument("--app", help="app whose endpoint mix to send (default: the deployed one)")
    load.add_argument("--url", help="entry point (default: the lab's, http://127.0.0.1:18080)")
    load.add_argument("--timeout", type=duration_flag("--timeout"), default=10.0,
                      help="per-request timeout, e.g. 10s; a bare number is in seconds "
                           "(default: %(default)s)")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    load.add_argument("--csv", type=Path, help="write every request to this CSV file "
                                               "(checked before the load starts)")
    load.set_defaults(func=_cmd_load)

    moves = sub.add_parser(
        "moves", help="measure how long a move takes and what it does to p99",
        description=MOVES_HELP, epilog=exit_codes_help(), formatter_class=_RawWithDefaults)
    moves.add_argument("--service", action="append", dest="services", metavar="SERVICE",
                       help="a managed service to move between new and old; repeatable, "
                            "moved in turn (default: the app's front end)")
    moves.add_argument("--rate", type=flag("--rate", above=0, maximum=1e6),
                       help="constant load during the moves, req/s (default: the SLO load of "
                            "the app's lab profile)")
    moves.add_argument("--moves", type=integer_flag("--moves", minimum=1, maximum=100),
                       default=DEFAULT_MOVES, help="moves in all, alternately to old and back")
    moves.add_argument("--window", type=duration_flag("--window", minimum_s=10.0),
                       default=DEFAULT_WINDOW_S,
                       help="wall time per move (the move, then steady load), e.g. 30s; a bare "
                            "number is in seconds")
    moves.add_argument("--profile", default="lab",
                       help="profile whose SLO load and SLO are the default rate and the bar")
    moves.add_argument("--json", action="store_true", help="print the measurement as JSON")
    moves.set_defaults(func=_cmd_moves)

    evaluate = sub.add_parser(
        "evaluate", help="run policies live on the lab against a compressed trace and compare "
                         "with the replay simulator",
        description=textwrap.fill(
                    "For each policy (all-new, all-old, ecoscale, ecoscale-ct): deploy the "
                    "app, start the daemon when the policy needs it, drive load that follows a "
                    "production trace compressed in time (the carbon trace compressed the "
                    "same way), and record measured p99, the tasks running per generation, "
                    "CPU per service and the daemon's own overhead. Then replay the same "
                    "compressed traces with the lab's measured profile and write a report "
                    "(report.md, comparison.csv, PNGs) that sets measured and simulated side "
                    "by side. Needs a lab that is up; plans from a profile measured on it "
                    "(`ecoscale profile --pool lab`, or --profile-sweep).", width=92),
        epilog=exit_codes_help(), formatter_class=_RawWithDefaults)
    evaluate.add_argument("--app", default="socialNetwork")
    evaluate.add_argument("--profile", default="lab",
                          help="profile measured on the lab (profiles/<app>/<name>.yaml)")
    evaluate.add_argument("--load-trace", default="worldcup98")
    evaluate.add_argument("--carbon-trace", default="CISO")
    evaluate.add_argument("--start", help="where the trace window starts: an offset such as "
                                          "6h (a bare number is in seconds) or an ISO time "
                                          "(default: the trace's default window, e.g. "
                                          "WorldCup98's 1998-07-01)")
    evaluate.add_argument("--duration", default="1d",
                          help="trace window to compress, e.g. 6h, 1d (a bare number is in "
                               "seconds)")
    evaluate.add_argument("--minutes", type=flag("--minutes", above=0, maximum=7 * 1440),
                          default=12.0,
                          help="wall-clock minutes per policy")
    evaluate.add_argument("--period-s", type=duration_flag("--period-s", minimum_s=1.0),
                          help="wall time per trace step (and daemon interval), e.g. 30s; a "
                               "bare number is in seconds; at least 3 move times (default: 3 x "
                               "--move-time rounded up to whole seconds)")
    evaluate.add_argument("--move-time", type=duration_flag("--move-time", minimum_s=0.1),
                          help="how long a move takes on the lab, e.g. 8s; a bare number is "
                               "in seconds (default: measured, the lab's latest `lab moves` for "
                               "the app, else 2 moves of the front end at the start of the run; "
                               f"--replay-only without one: {LAB_MOVE_TIME_S:g} s); the period "
                               "is at least 3 of them, and the trace step per period must keep "
                               "the load's rise between two decisions within 25 %% (else the "
                               "run is refused with the fix)")
    evaluate.add_argument("--trend-periods",
                          type=integer_flag("--trend-periods", minimum=0, maximum=100),
                          default=LIVE_TREND_PERIODS,
                          help="the daemon's trend-aware load estimate: its window in periods, "
                               "live and in the replay; 0: off")
    evaluate.add_argument("--replay-only", action="store_true",
                          help="print the time scale and the replay of the same compressed "
                               "run, without the lab (seconds)")
    evaluate.add_argument("--policies", default="all-new,all-old,ecoscale,ecoscale-ct")
    evaluate.add_argument("--peak-qps", type=flag("--peak-qps", above=0, maximum=1e6),
                          help="trace peak, req/s (default: --peak-fraction x the profile's "
                               "SLO load)")
    evaluate.add_argument("--peak-fraction", type=flag("--peak-fraction", above=0, maximum=10),
                          default=1.0,
                          help="trace peak as a fraction of the profile's SLO load")
    evaluate.add_argument("--profile-sweep", action="store_true",
                          help="profile the lab first with a short sweep (~15 min) and plan "
                               "and replay with that profile (written to --out)")
    evaluate.add_argument("--headroom", type=flag("--headroom", minimum=0, below=1), default=0.0,
                          help="share of the SLO the plan keeps free (ecoscale plan --headroom)")
    evaluate.add_argument("--out", type=Path, default=Path("lab-evaluation"),
                          help="folder for report.md, comparison.csv, measured_steps.csv, "
                               "tables and PNGs (checked before the lab is touched)")
    evaluate.set_defaults(func=_cmd_evaluate)

    colocation = sub.add_parser(
        "colocation", help="measure the co-location latency model on the lab: services alone "
                           "and together on the old node, measured p99 against the prediction",
        description=COLOCATION_HELP, epilog=exit_codes_help(), formatter_class=_RawWithDefaults)
    colocation.add_argument("--app", default="socialNetwork",
                            help="app to deploy and measure (its topology names the services)")
    colocation.add_argument("--services", default=",".join(DEFAULT_SERVICES),
                            help="comma-separated services to put together on the old node "
                                 "(at least two, not the front end)")
    colocation.add_argument("--loads", default=",".join(f"{q:g}" for q in DEFAULT_LOADS_QPS),
                            help="comma-separated front-end loads (req/s), ascending, at "
                                 "least two; every service is measured alone and all "
                                 "together at each")
    colocation.add_argument("--warmup-s", type=duration_flag("--warmup-s", positive=False),
                            default=DEFAULT_WARMUP_S,
                            help="warm-up before each window, e.g. 5s; a bare number is in seconds")
    colocation.add_argument("--measure-s", type=duration_flag("--measure-s", minimum_s=15.0),
                            default=DEFAULT_MEASURE_S,
                            help="measured window per point, e.g. 25s; a bare number is in "
                                 "seconds (at least 15 s: three 5-s slices)")
    colocation.add_argument("--out", type=Path, default=Path("lab-colocation"),
                            help=f"folder for {', '.join(COLOCATION_OUTPUTS)}; a raw CSV "
                                 "already there is resumed (finished points are not re-run)")
    colocation.add_argument("--dry-run", action="store_true",
                            help="print the experiments and the expected duration; touch "
                                 "nothing")
    colocation.set_defaults(func=_cmd_colocation)


MOVES_HELP = """\
Measure a move as the daemon makes it (a placement change, Swarm's start-first update) under
a constant open-loop load: each --service in turn goes from new to old and back, one move per
--window. Each move is timed from the update call to when the new task runs, answers by
Swarm DNS, is scraped by Prometheus, and the old task is gone; the move time is the last of
these. The p99 of the requests sent during the move is set against the steady p99 before and
after it, and against the profile's SLO. The result is kept in the lab's folder: `lab status`
prints it and `lab evaluate` takes its period from it (at least 3 move times). Needs a lab
that is up with an app deployed; the moved services end on new.

  ecoscale lab moves                       # the front end, 4 moves at the SLO load
  ecoscale lab moves --service home-timeline-service --moves 2 --rate 60
"""


COLOCATION_HELP = """\
Check the co-location latency model (ecoscale/model/colocation.py, README "Co-location
latency") against a measurement. The lab's old node is one CFS quota over all its
containers: one shared socket. With the profiler's runner, each of --services runs alone on
the old node (the other services on new) at every --loads, then all of them together there
at the same loads. Each service's alone curve is fitted as a profile curve is; its
co-located p99 is predicted from that curve, its own load and the CPU the other services
add to the socket (measured in the same window, and modelled from their curves), and set
against the measured p99: error in ms and % (negative: optimistic, the model promises less
latency than measured). Needs root; brings the lab up and deploys --app when they are not.

Writes into --out: colocation-raw.csv (every measured row, the profiler's raw format;
resumable), colocation.csv (the error table) and report.md (table, summary, alone curves,
where the numbers came from: the lab, emulated). About 8 minutes with the defaults (464 s here).

  ecoscale lab colocation --dry-run
  ecoscale lab colocation --out lab-colocation
  ecoscale lab colocation --services home-timeline-service,post-storage-service \\
      --loads 50,100
"""


EVALUATION_OUTPUTS = ("report.md", "comparison.csv", "measured_steps.csv", "lab_evaluation.png",
                      "lab_carbon.png", "profile-lab.yaml", "profile-lab.csv")
"""What `lab evaluate` writes into --out (besides table-<policy>.yaml)."""


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ecoscale.evaluation.evaluate import POLICIES, EvaluationOptions, evaluate

    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise UsageError(f"--policies: unknown policies {', '.join(unknown)}; choose from "
                         f"{', '.join(POLICIES)}")
    options = EvaluationOptions(app=args.app, profile=args.profile, load_trace=args.load_trace,
                                carbon_trace=args.carbon_trace, start=args.start,
                                duration=args.duration, minutes=args.minutes,
                                period_s=args.period_s, policies=policies,
                                peak_qps=args.peak_qps, peak_fraction=args.peak_fraction,
                                headroom=args.headroom, profile_sweep=args.profile_sweep,
                                move_time_s=args.move_time, trend_periods=args.trend_periods)
    if not 0.0 <= options.headroom < 1.0:
        raise EcoscaleError(f"--headroom must be in [0, 1), got {options.headroom:g}")
    if not 0.0 < options.peak_fraction <= 2.0:
        raise EcoscaleError(f"--peak-fraction must be in (0, 2], got {options.peak_fraction:g}")
    if args.replay_only:
        from ecoscale.evaluation.evaluate import simulate, with_move_time

        if "all-new" not in options.policies:   # a replay costs seconds: never a nan saving
            print("note: --policies: all-new runs too, as the reference for savings",
                  file=sys.stderr)
            options = replace(options, policies=("all-new", *options.policies))
        options = with_move_time(options, _lab(args))
        scale, summary = simulate(options)
        print(f"move time: {options.move_source}")
        print(f"time scale: {scale.text()}")
        print(f"trend estimate: {options.trend_periods or 'off'}"
              + (" period(s)" if options.trend_periods else ""))
        columns = ["carbon_kg", "saving_vs_all_new_pct", "slo_violation_pct", "moves"]
        summary[columns] = summary[columns].round(3) + 0.0   # + 0.0: no "-0.000"
        print(summary[["policy", *columns]].to_string(index=False))
        return 0
    from ecoscale.adapters.outputs import check_out_dir

    for note in check_out_dir(args.out, EVALUATION_OUTPUTS, EVALUATION_OUTPUTS).notes():
        print(f"note: {note}", file=sys.stderr)
    table = evaluate(options, args.out, log=_progress)
    print(table.round(3).to_string(index=False))
    print(f"report: {args.out}/report.md")
    return 0


def _cmd_moves(args: argparse.Namespace) -> int:
    from ecoscale.adapters.files import load_profile
    from ecoscale.evaluation.moves import measure_moves

    lab = _quiet_lab(args) if args.json else _lab(args)   # --json: stdout holds JSON alone
    log = _progress_to_stderr if args.json else _progress
    deployed = lab.app()
    if deployed is None:
        raise InputError("ecoscale lab moves", "no app is deployed; run `ecoscale lab deploy "
                                               "APP` first")
    profile = load_profile(deployed.name, args.profile)
    rate = args.rate or profile.slo_load_qps
    if rate is None:
        raise UsageError(f"--rate: profile '{profile.name}' has no SLO load; give --rate")
    services = args.services or [deployed.topology.frontend]
    measurement = measure_moves(lab, services, rate_qps=rate, moves=args.moves,
                                window_s=args.window, slo_ms=profile.slo_ms, log=log)
    if args.json:
        print(json.dumps(measurement.to_dict(), indent=1))
        return 0
    for move in measurement.moves:
        print(f"  {move.text()}")
    print(f"move time: {measurement.text()}")
    print(f"  source: {measurement.source}")
    for note in measurement.notes:
        print(f"  {note}")
    return 0


def _colocation_options(args: argparse.Namespace):
    """The options of `lab colocation` from its flags (UsageError on a bad list)."""
    from ecoscale.evaluation.colocation import ColocationOptions

    services = tuple(s.strip() for s in args.services.split(",") if s.strip())
    try:
        loads = tuple(parse_number_text(x, "--loads", above=0, maximum=1e6)
                      for x in args.loads.split(",") if x.strip())
    except BadNumber as exc:
        raise UsageError(f"{exc}; give comma-separated loads in req/s, e.g. 40,70,100") from None
    if len(loads) < 2 or list(loads) != sorted(set(loads)):
        raise UsageError(f"--loads: at least two distinct loads in ascending order (req/s), "
                         f"e.g. 40,70,100; got {args.loads!r}")
    return ColocationOptions(app=args.app, services=services, loads_qps=loads,
                             warmup_s=args.warmup_s, measure_s=args.measure_s)


def _cmd_colocation(args: argparse.Namespace) -> int:
    from ecoscale.evaluation.colocation import checked_topology, plan_text, run_colocation
    from ecoscale.profiler.colocation import format_table

    options = _colocation_options(args)
    checked_topology(options)   # before the lab is touched: a refusal costs nothing
    if args.dry_run:
        print(plan_text(options)[1])
        return 0
    points = run_colocation(options, args.out, log=_progress)
    print(format_table(points))
    print(f"report: {args.out}/report.md")
    return 0


def _lab(args: argparse.Namespace):
    from ecoscale.lab.lab import Lab

    return Lab.attach(args.state_dir, log=_progress)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _progress_to_stderr(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    from ecoscale.lab.config import default_state_dir
    from ecoscale.lab.lab import Lab

    overrides: dict[str, Any] = {"state_dir": args.state_dir or default_state_dir(),
                                 "install_packages": not args.no_install,
                                 "kept_cpus": args.kept_cpus}
    config = LabConfig.with_nodes(new=args.new_nodes, old=args.old_nodes,
                                  old_cpu_factor=args.old_cpu_factor,
                                  old_node_cpus=args.old_node_cpus or None,
                                  slot_cpus=args.slot_cpus or None, **overrides)
    lab = Lab(config, log=_progress)
    timings = lab.up()
    if timings:
        print("  " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items()))
    _print_addresses(lab)
    return 0


def _print_addresses(lab: Any) -> None:
    print(f"  DOCKER_HOST={lab.docker_host}   (manager; `ecoscale lab status` lists every node)")
    print(f"  Prometheus  {lab.prometheus_url}")
    print(f"  entry point {lab.frontend_url}   (after `ecoscale lab deploy APP`)")


def _cmd_down(args: argparse.Namespace) -> int:
    _lab(args).down()
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    lab = _lab(args)
    result = lab.deploy(args.app, args.emulation)
    print(f"  {result['services']} services of {result['app']} ready in "
          f"{result['seconds']:.1f} s; Prometheus scrapes every task")
    _print_addresses(lab)
    return 0


def _cmd_serve_stack(args: argparse.Namespace) -> int:
    import shlex

    lab = _quiet_lab(args)
    if args.wait:
        seconds = lab.wait_stack(args.stack)
        print(f"# stack {args.stack} ready in {seconds:.1f} s; entry point {lab.stack_url}")
        return 0
    lab.undeploy()
    served = lab.serve_stack(args.stack, args.app, frontend_port=args.port)
    for key, value in served.env.items():
        print(f"export {key}={shlex.quote(value)}")
    print(f"# then: docker stack deploy -c deploy/examples/socialnetwork-swarm.yml "
          f"{args.stack}; entry point {served.url}")
    return 0


def _quiet_lab(args: argparse.Namespace):
    """The lab, logging to stderr (stdout carries the `export` lines)."""
    from ecoscale.lab.lab import Lab

    return Lab.attach(args.state_dir, log=lambda m: print(f"# {m}", file=sys.stderr))


def _cmd_status(args: argparse.Namespace) -> int:
    status = _lab(args).status()
    if args.json:
        print(json.dumps(status, indent=1, default=str))
        return 0
    print(f"lab: {'up' if status['up'] else 'DOWN'}   folder {status['state_dir']}   "
          f"app: {status['app'] or '-'}")
    print(f"  DOCKER_HOST={status['docker_host']}   Prometheus {status['prometheus_url']}   "
          f"entry point {status['frontend_url']}")
    print("\nnodes:")
    for node in status["nodes"]:
        quota = node["cpu_quota"]
        limit = f"quota {quota[0]}/{quota[1]} us" if quota else "no quota"
        print(f"  {node['name']:<8} {node['generation']:<5} "
              f"{'manager' if node['manager'] else 'worker ':<7} {node['address']:<12} "
              f"{'ready' if node['ready'] else 'NOT READY':<9} {limit}"
              f"{'   ' + node['availability'] if node.get('availability') else ''}")
    print("\nemulation:")
    print(textwrap.fill(status["note"], width=96, initial_indent="  ", subsequent_indent="  "))
    for generation, how in status["emulation"].items():
        print(textwrap.fill(f"{generation}: {how['speed']}; {how['capacity']}", width=96,
                            initial_indent="  ", subsequent_indent="      "))
    if status.get("moves"):
        print(textwrap.fill(f"move time: {status['moves']['text']}", width=96,
                            initial_indent="  ", subsequent_indent="      "))
    if status.get("slot_budget"):
        print(textwrap.fill(f"slot budget: {status['slot_budget']['text']}", width=96,
                            initial_indent="  ", subsequent_indent="      "))
    if status["services"]:
        print("\nservices:")
        for name, service in sorted(status["services"].items()):
            where = ", ".join(f"{t['node']} ({t['state']})" for t in service["tasks"]
                              if t["desired"] == "running") or "-"
            print(f"  {name:<28} {service['role']:<10} x{service['replicas']} "
                  f"on {service['generation'] or 'manager':<5} -> {where}")
    return 0


def _schedule(args: argparse.Namespace) -> tuple[float | None, list[float] | None, str]:
    """(constant rate, schedule, description) from the load flags; InputError if unclear."""
    given = [name for name, value in (("--rate", args.rate), ("--schedule", args.schedule),
                                      ("--trace", args.trace)) if value is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of --rate (with --duration), --schedule or --trace")
    if args.rate is not None:
        if args.duration is None:
            raise UsageError("--rate needs --duration, e.g. --duration 30s")
        return args.rate, None, f"{args.rate:g} req/s for {args.duration:g} s"
    if args.schedule is not None:
        try:
            rates = [parse_number_text(v, "--schedule", minimum=0, maximum=1e6)
                     for v in args.schedule.split(",") if v.strip()]
        except BadNumber as exc:
            raise UsageError(f"{exc}; expected comma-separated rates (req/s), got "
                             f"{args.schedule!r}") from None
        if not rates or not max(rates) > 0:
            raise UsageError("--schedule: give comma-separated rates (req/s), at least one "
                             "> 0")
        return None, rates, f"schedule of {len(rates)} steps x {args.step_s:g} s"
    if args.peak_qps is None or not args.peak_qps > 0:
        raise UsageError("--trace: give --peak-qps (> 0), the rate the trace's peak maps to")
    from ecoscale.adapters.tracefiles import load_load_trace

    trace = load_load_trace(args.trace)
    duration = args.steps * trace.step_s if args.steps else None
    check_window(trace, args.trace_start, duration, "load", "--trace-start and --steps")
    window = trace.window(args.trace_start, duration)
    values = [float(v) for v in window.values]
    peak = max(values)
    if not peak > 0 or any(math.isnan(v) for v in values):
        raise InputError(args.trace, "the trace window has no positive rate to scale")
    rates = [args.peak_qps * v / peak for v in values]
    return None, rates, (f"trace {window.name}: {len(rates)} steps of {trace.step_s:g} s "
                         f"replayed at {args.step_s:g} s each, peak {args.peak_qps:g} req/s")


def _cmd_load(args: argparse.Namespace) -> int:
    from ecoscale.adapters.files import load_topology
    from ecoscale.loadgen.generator import run_load

    rate, schedule, what = _schedule(args)
    if args.csv is not None:
        from ecoscale.adapters.outputs import check_out_file

        for note in check_out_file(args.csv, "--csv"):
            print(f"note: {note}", file=sys.stderr)
    lab = _lab(args)
    deployed = None if args.app else lab.app()   # as deployed: a name or a topology path
    if not args.app and deployed is None:
        raise InputError("ecoscale lab load", "no app is deployed; run `ecoscale lab deploy "
                                              "APP` first, or give --app and --url")
    url = args.url or lab.frontend_url
    topology = load_topology(args.app) if args.app else deployed.topology  # type: ignore[union-attr]
    print(f"ecoscale lab load: {what} against {url} ({topology.app} mix, seed {args.seed})",
          flush=True)
    result = run_load(url, topology, rate, args.duration, schedule=schedule,
                      step_s=args.step_s, seed=args.seed, timeout_s=args.timeout)
    if args.csv:
        with args.csv.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["intended_s", "endpoint", "latency_ms", "status", "error"])
            for r in result.records:
                writer.writerow([f"{r.at_s:.6f}", r.endpoint, f"{r.latency_s * 1000:.3f}",
                                 r.status, r.error])
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0 if not result.error_count else 1
    print(f"  sent {summary['sent']}, ok {summary['ok']}, errors "
          f"{sum(result.errors.values())} {result.errors or ''}".rstrip())
    print(f"  achieved {summary['achieved_qps']:.1f} req/s of {summary['target_qps']:.1f} "
          f"target (mean)")
    print(f"  client-side latency from the intended send time (ms): p50 {summary['p50_ms']:.1f}"
          f"  p95 {summary['p95_ms']:.1f}  p99 {summary['p99_ms']:.1f}")
    for endpoint, values in summary["by_endpoint"].items():
        print(f"    {endpoint:<24} {values['ok']:>7} ok  p99 {values['p99_ms']:.1f} ms")
    lag = summary["max_send_lag_ms"]
    print(f"  generator send lag max {lag:.1f} ms"
          + ("  (high: this machine could not keep the schedule)" if lag > 50 else ""))
    print("  (client side includes the lab gateway's extra hop; server-side end-to-end p99 "
          "is the front end's histogram in Prometheus)")
    if schedule is not None and len(schedule) > 1:
        print("  per step: " + ", ".join(f"{row['target_qps']:.0f}->{row['p99_ms']:.0f}ms"
                                         for row in result.per_step()[:30])
              + (" ..." if len(schedule) > 30 else ""))
    if args.csv:
        print(f"  wrote {len(result.records)} requests to {args.csv}")
    return 0 if not result.error_count else 1

