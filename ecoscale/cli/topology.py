"""``ecoscale topology import``: a topology YAML from Jaeger / Zipkin trace exports.

Argument parsing and wiring only: the readers are ``ecoscale.adapters.tracespans``, the
inference ``ecoscale.model.topology_inference``.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from ecoscale.cli.output import Reporter, add_output_options, checked_out_file
from ecoscale.errors import EcoscaleError, UsageError, exit_codes_help

TOPOLOGY_HELP = """\
Work with application topologies (profiles/<app>/topology.yaml: services, calls, endpoints
as stages of parallel calls, the request mix).

  ecoscale topology import traces.json --app myApp   # from a Jaeger or Zipkin export
"""

IMPORT_HELP = """\
Infer a topology from trace exports and write it as topology YAML (the file `plan`,
`replay` and `lab` read with --app).

Reads Jaeger JSON (what the query API returns:
  curl 'http://JAEGER:16686/api/traces?service=FRONTEND&limit=2000' > jaeger.json)
and Zipkin v2 JSON (a list of traces, or a list of spans:
  curl 'http://ZIPKIN:9411/api/v2/traces?serviceName=FRONTEND&limit=2000' > zipkin.json).

Per trace, the spans of one service that nest are one visit of it; the calls below a visit
that overlap in time are one stage of parallel calls, sequential ones successive stages.
Each endpoint is a root operation and takes the structure most of its traces agree on; its
share of the mix is its share of the root spans. Storage kinds come from db.system tags,
else from service names (memcached, mongo, redis), else logic: check them.

What cannot be placed is listed as findings naming the trace and the span, never guessed:
orphan spans (parent not in the export), clock skew (a child outside its parent), cycles,
spans without a service name, traces that disagree with their endpoint's structure. Such
traces are left out of the structure. Services and calls that no trace exercises are not
in the result: add them by hand.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``topology`` and its ``import`` subcommand to the ecoscale parser."""
    topology = sub.add_parser("topology", help="application topologies: import from traces",
                              description=TOPOLOGY_HELP, epilog=exit_codes_help(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = topology.add_subparsers(dest="topology_command", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("import", help="infer a topology from Jaeger / Zipkin trace exports",
                           description=IMPORT_HELP,
                           epilog=exit_codes_help(
                               "  1  also: no endpoint could be placed, or with --strict, a "
                               "finding"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="trace exports (JSON); spans of one trace in several files are joined")
    p.add_argument("--format", choices=("auto", "jaeger", "zipkin"), default="auto",
                   help="format of the files (default: %(default)s, told by their shape)")
    p.add_argument("--app", help="the app's name, written as `app:` (default: the first "
                                 "file's name without its extension)")
    p.add_argument("--out", type=Path,
                   help="topology file to write, checked before reading the traces "
                        "(default: profiles/<app>/topology.yaml; a file git tracks is "
                        "written beside, as topology.new.yaml, unless --force)")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out even if git tracks it (default: write beside it)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1, and write nothing, if there is any finding (default: list "
                        "the findings on stderr and write what could be placed)")
    p.add_argument("--max-findings", type=int, default=20, metavar="N",
                   help="findings listed one by one; the rest are counted (default: "
                        "%(default)s)")
    add_output_options(p)
    p.set_defaults(func=cmd_import)


APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def cmd_import(args: argparse.Namespace) -> int:
    from ecoscale.adapters.files import read_yaml, write_yaml
    from ecoscale.adapters.tracespans import read_trace_file
    from ecoscale.model.topology import parse_topology
    from ecoscale.model.topology_inference import infer_topology, topology_data
    from ecoscale.paths import profiles_dir, shown

    began = time.monotonic()
    out = Reporter(args)
    app = args.app or args.files[0].name.split(".")[0]
    if not APP_NAME.match(app):
        raise UsageError(f"--app {app!r}: an app name is letters, digits, '.', '_' and '-' "
                         "(it names the folder profiles/<app>/); give --app NAME")
    if args.max_findings < 0:
        raise UsageError(f"--max-findings {args.max_findings}: must be 0 or more")
    destination = checked_out_file(args.out or profiles_dir() / app / "topology.yaml",
                                    args.force, out)
    files = [read_trace_file(path, args.format) for path in args.files]
    spans = [s for f in files for s in f.spans]
    source = "traces: " + ", ".join(f"{Path(f.path).name} ({f.format}, {f.traces} traces)"
                                    for f in files)
    result = infer_topology(spans, app, source)
    findings = list(result.findings)
    document: dict[str, Any] = {
        "files": [{"path": f.path, "format": f.format, "traces": f.traces,
                   "spans": len(f.spans)} for f in files],
        "traces": result.traces, "spans": result.spans,
        "findings": [{"kind": f.kind, "trace": f.trace_id, "span": f.span_id,
                      "message": f.message} for f in findings],
        "endpoints": [vars(e) for e in result.endpoints],
    }
    for f in files:
        out.text(f"read {f.path}: {f.format}, {f.traces} traces, {len(f.spans)} spans")
    _print_findings(findings, args.max_findings, out)
    if result.topology is None:
        raise EcoscaleError("topology import: no topology could be inferred:\n"
                            + "\n".join(f"  - {p}" for p in result.problems))
    topology = result.topology
    calls = sum(len(s.calls) for s in topology.services.values())
    out.text(f"front end {topology.frontend}: {_count(len(topology.services), 'service')}, "
             f"{_count(calls, 'call')}, {_count(len(topology.endpoints), 'endpoint')}")
    evidence = {e.name: e for e in result.endpoints}
    width = max(len(e.name) for e in topology.endpoints)
    out.text(f"  {'endpoint':<{width}}  share   traces  placed  agree  http")
    for endpoint in topology.endpoints:
        e = evidence[endpoint.name]
        out.text(f"  {endpoint.name:<{width}}  {endpoint.share:<6.4g}  {e.traces:>6}  "
                 f"{e.placed:>6}  {e.agreeing:>5}  {endpoint.http or '(none)'}")
    if args.strict and findings:
        out.data(document)
        raise EcoscaleError(f"topology import: {_count(len(findings), 'finding')} and --strict: "
                            "nothing written (fix the exports, or drop --strict)")
    header = (f"# ecoscale topology, imported by `ecoscale topology import` from "
              f"{result.traces} traces ({', '.join(Path(f.path).name for f in files)}).\n"
              "# Kinds come from db.system tags or service names: check them. Services and "
              "calls\n# that no trace exercised are missing: add them by hand.\n")
    write_yaml(destination, topology_data(topology), header=header)
    parse_topology(read_yaml(destination), str(destination))   # it must load back
    document["out"] = str(destination)
    out.data(document)
    out.text(f"wrote {shown(destination)} in {time.monotonic() - began:.1f} s")
    return 0


def _print_findings(findings: list[Any], limit: int, out: Any) -> None:
    if not findings:
        out.text("findings: none")
        return
    kinds: dict[str, int] = {}
    for finding in findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    counts = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
    out.warn(f"{_count(len(findings), 'finding')} ({counts}):")
    for finding in findings[:limit]:
        out.warn(f"  {finding.line()}")
    if len(findings) > limit:
        out.warn(f"  ... and {len(findings) - limit} more (--max-findings, or --json for all)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
