"""Wiring for `ecoscale run`: config -> adapters -> Daemon."""

from __future__ import annotations

import errno

from ecoscale.adapters.clock import SystemClock
from ecoscale.adapters.files import (
    load_config,
    load_hardware,
    load_profile,
    load_table,
    load_topology,
)
from ecoscale.config import DaemonConfig
from ecoscale.daemon.loop import Daemon
from ecoscale.daemon.packing import missing_slot_cpus
from ecoscale.daemon.telemetry import Log, serve
from ecoscale.daemon.wiring import Adapters
from ecoscale.errors import EcoscaleError, InputError
from ecoscale.model.app import AppModel, check_table_fits
from ecoscale.planner.table import PolicyTable


def load_all(path: str) -> tuple[DaemonConfig, PolicyTable, AppModel]:
    """Config, table and model, every problem of each reported (InputError)."""
    config = load_config(path)
    table = load_table(config.table)
    topology = load_topology(config.app)
    if table.app and table.app != topology.app:   # ``app`` may be a topology file's path
        named = "" if config.app == topology.app else f" (topology of app '{topology.app}')"
        raise InputError(config.table, f"the table is for app '{table.app}', the config says "
                                       f"'{config.app}'{named}")
    model = AppModel(topology, load_profile(config.app, config.profile),
                     load_hardware(config.hardware))
    check_table_fits(table, model, config.table)
    missing = missing_slot_cpus(table, config.slot_cpus)
    if missing:
        raise InputError(config.source or path, [
            f"slot_cpus.{g}: required, since the table {config.table} is right-sized (its "
            f"replicas hold shares of a socket, applied as CPU reservations and limits of "
            f"share x slot_cpus.{g}); set it to the CPUs (cores) of one socket of {g}, which "
            "is one Swarm node of it (e.g. `docker node inspect NODE --format "
            "'{{.Description.Resources.NanoCPUs}}'` / 1e9)" for g in missing])
    unknown = [s for s, _ in table.levels[0].placement.items if s not in model.visits]
    if unknown:
        raise InputError(config.table, f"services not in the {config.app} topology: "
                                       f"{', '.join(unknown)}")
    return config, table, model


ADAPTERS = Adapters()
"""What `run` and `run --check` build their clients with (tests put fakes here)."""


def build_daemon(path: str, dry_run: bool = False, adapters: Adapters | None = None) -> Daemon:
    config, table, model = load_all(path)
    if dry_run:
        from dataclasses import replace

        config = replace(config, dry_run=True)
    adapters = adapters or ADAPTERS
    clock = SystemClock()
    return Daemon(
        config=config,
        table=table,
        orchestrator=adapters.orchestrator(config),
        metrics=adapters.metrics(config),
        carbon=adapters.carbon(config, clock.now()),
        clock=clock,
        model=model,
        log=Log(),
        adapters=adapters,
    )


def listen(daemon: Daemon, path: str) -> object:
    """Start /metrics and /healthz; a port in use is an EcoscaleError that says what to do."""
    address, port = daemon.config.listen_address, daemon.config.listen_port
    try:
        return serve(daemon.telemetry, daemon.health, address, port, daemon.clock.now)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EcoscaleError(
                f"{path}: listen_port {port} on {address} is already in use (another ecoscale "
                f"daemon? `ss -ltnp 'sport = :{port}'` names it); stop it, or set listen_port "
                "to a free port (0 turns /metrics and /healthz off)") from None
        raise EcoscaleError(f"{path}: cannot listen on {address}:{port} ({exc.strerror}); "
                            "set listen_address / listen_port") from None


def run(path: str, dry_run: bool = False, once: bool = False) -> int:
    daemon = build_daemon(path, dry_run)
    server = None
    if daemon.config.listen_port and not once:
        server = listen(daemon, path)
    try:
        if once:
            report = daemon.run_once()
            return 0 if report.healthy else 1

        def reload() -> tuple[DaemonConfig, PolicyTable, AppModel]:
            return load_all(path)

        return daemon.run_forever(reload)
    finally:
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
