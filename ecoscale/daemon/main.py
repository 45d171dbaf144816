"""Wiring for `ecoscale run`: config -> adapters -> Daemon."""

from __future__ import annotations

import time

from ecoscale.adapters.carbon import carbon_source
from ecoscale.adapters.files import load_hardware, load_profile, load_table, load_topology
from ecoscale.adapters.prometheus import PromQLMetrics
from ecoscale.adapters.swarm import DockerSwarm
from ecoscale.config import DaemonConfig, load_config
from ecoscale.daemon.loop import Daemon, SystemClock
from ecoscale.daemon.telemetry import Log, serve
from ecoscale.errors import InputError
from ecoscale.model.app import AppModel
from ecoscale.model.consistency import check_table_fits
from ecoscale.planner.table import PolicyTable


def load_all(path: str) -> tuple[DaemonConfig, PolicyTable, AppModel]:
    """Config, table and model, every problem of each reported (InputError)."""
    config = load_config(path)
    table = load_table(config.table)
    if table.app and table.app != config.app:
        raise InputError(config.table, f"the table is for app '{table.app}', the config says "
                                       f"'{config.app}'")
    model = AppModel(load_topology(config.app), load_profile(config.app, config.profile),
                     load_hardware(config.hardware))
    check_table_fits(table, model, config.table)
    unknown = [s for s, _ in table.levels[0].placement.items if s not in model.visits]
    if unknown:
        raise InputError(config.table, f"services not in the {config.app} topology: "
                                       f"{', '.join(unknown)}")
    return config, table, model


def build_daemon(path: str, dry_run: bool = False) -> Daemon:
    config, table, model = load_all(path)
    if dry_run:
        from dataclasses import replace

        config = replace(config, dry_run=True)
    clock = SystemClock()
    return Daemon(
        config=config,
        table=table,
        swarm=DockerSwarm(config.docker_host, config.labels),
        metrics=PromQLMetrics(config.prometheus),
        carbon=carbon_source(config.carbon, time.time()),
        clock=clock,
        model=model,
        log=Log(),
    )


def run(path: str, dry_run: bool = False, once: bool = False) -> int:
    daemon = build_daemon(path, dry_run)
    server = None
    if daemon.config.listen_port and not once:
        server = serve(daemon.telemetry, daemon.health, daemon.config.listen_address,
                       daemon.config.listen_port)
    try:
        if once:
            report = daemon.run_once()
            return 0 if report.healthy else 1

        def reload() -> tuple[DaemonConfig, PolicyTable]:
            config, table, _ = load_all(path)
            return config, table

        return daemon.run_forever(reload)
    finally:
        if server is not None:
            server.shutdown()
