"""``python3 -m ecoscale.emulator``: run one emulated service (or the gateway) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ecoscale.emulator.http import HttpServer
from ecoscale.emulator.service import GATEWAY_NAME, Emulator
from ecoscale.emulator.spec import AppSpec, SpecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m ecoscale.emulator",
        description="Play one microservice of an emulated app: own CPU and I/O work per "
                    "request, then its callees stage by stage; Prometheus metrics on /metrics.")
    parser.add_argument("--spec", required=True, type=Path,
                        help="app document (JSON) written by `ecoscale lab deploy`")
    parser.add_argument("--service", default=GATEWAY_NAME,
                        help="which service of the app to play (default: the gateway)")
    parser.add_argument("--gateway", action="store_true",
                        help="forward every request to the app's front end instead")
    parser.add_argument("--node", default=os.environ.get("ECOSCALE_NODE", ""),
                        help="host name of the node this task runs on, to look up its speed "
                             "in the spec's node_speed (default: $ECOSCALE_NODE, which the lab "
                             "sets from Swarm's {{.Node.Hostname}})")
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, help="listen port (default: the spec's port)")
    parser.add_argument("--peer", action="append", default=[], metavar="SERVICE=HOST:PORT",
                        help="reach SERVICE at HOST:PORT instead of by its DNS name (tests and "
                             "benchmarks outside Swarm); repeatable")
    parser.add_argument("--drain-s", type=float, default=2.0,
                        help="on SIGTERM keep serving this long so that callers move to other "
                             "replicas, then exit (default: %(default)s)")
    return parser


def parse_peers(values: Sequence[str]) -> dict[str, tuple[str, int]]:
    """SERVICE=HOST:PORT items -> {service: (host, port)}."""
    peers = {}
    for value in values:
        service, sep, address = value.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not port.isdigit():
            raise ValueError(f"--peer {value!r}: expected SERVICE=HOST:PORT")
        peers[service] = (host, int(port))
    return peers


async def serve(emulator: Emulator, host: str, port: int, drain_s: float) -> None:
    server = HttpServer(emulator.handle)
    bound = await server.start(host, port)
    print(f"ecoscale emulator: {emulator.name} ({emulator.kind}) of {emulator.spec.app} "
          f"on node {emulator.node or '?'} (cpu speed {emulator.speed:g}) listening on "
          f"{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print(f"ecoscale emulator: {emulator.name} draining for {drain_s:g} s", flush=True)
    await server.drain(drain_s)
    emulator.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        raw = args.spec.read_bytes()
        spec = AppSpec.from_dict(json.loads(raw))
        emulator = Emulator(spec, args.service, gateway=args.gateway,
                            spec_id=hashlib.sha256(raw).hexdigest()[:12],
                            peers=parse_peers(args.peer), node=args.node)
    except (OSError, ValueError, SpecError) as exc:
        print(f"ecoscale emulator: error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(emulator, args.host, args.port or spec.port, args.drain_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
