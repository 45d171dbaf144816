"""The ecoscale daemon on the lab: its config for the lab's metrics, run as a host process
(tests that send it signals) or as a Swarm service from deploy/daemon/stack.yml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ecoscale.errors import EcoscaleError
from ecoscale.lab.deploy import PROMETHEUS_PORT
from ecoscale.lab.images import image_name
from ecoscale.lab.lab import Lab
from ecoscale.lab.queries import lab_queries
from ecoscale.paths import deploy_dir, project_root

STACK = "ecoscale"
DAEMON_SERVICE = f"{STACK}_daemon"
PROMETHEUS_SERVICE = "ecoscale-prometheus"


def daemon_config(lab: Lab, table: Path, folder: Path, *, frontend: str = "nginx-thrift",
                  app: str = "socialNetwork", profile: str = "default",
                  interval_s: float = 5.0, window_s: int = 15, in_swarm: bool = False,
                  dry_run: bool = False, listen_port: int = 0, carbon: dict[str, Any] | None
                  = None, control: dict[str, Any] | None = None,
                  slot_cpus: dict[str, float] | None = None) -> Path:
    """Write ecoscale.yaml (and a copy of the table) into ``folder``; returns the config.
    ``slot_cpus``: CPUs of one slot per generation (needed by a right-sized table)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "policy-table.yaml"
    if table.resolve() != target.resolve():
        target.write_bytes(table.read_bytes())
    prometheus = (f"http://{PROMETHEUS_SERVICE}:{PROMETHEUS_PORT}" if in_swarm
                  else lab.prometheus_url)
    config: dict[str, Any] = {
        "app": app,
        "table": "policy-table.yaml",
        "profile": profile,
        "interval_s": interval_s,
        "max_backoff_s": max(interval_s * 4, 30.0),
        "dry_run": dry_run,
        "target": {"kind": "swarm", "docker_host": "" if in_swarm else lab.docker_host},
        "state_file": "/tmp/ecoscale-daemon-state.json" if in_swarm else str(folder / "state.json"),
        "pause_file": "/etc/ecoscale/pause" if in_swarm else str(folder / "pause"),
        "listen_address": "127.0.0.1",
        "listen_port": listen_port,
        "prometheus": {"url": prometheus, "stale_after_s": 30,
                       **lab_queries(frontend, window_s)},
        "carbon": carbon or {"trace": "CISO"},
        "control": control or {},
        **({"slot_cpus": slot_cpus} if slot_cpus else {}),
    }
    path = folder / "ecoscale.yaml"
    path.write_text("# written by ecoscale.evaluation.launcher for the lab\n"
                    + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def start_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`ecoscale run --config CONFIG` as a host process, its JSON log lines into ``log``."""
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "ecoscale", "run", "--config", str(config)],
                            stdout=handle, stderr=subprocess.STDOUT, cwd=project_root())


def venv_site_packages() -> str:
    """The running virtual environment's site-packages ('' outside a venv).

    In a venv, ``bin/python3`` is a link to the base interpreter, which the daemon's container
    would not see: the stack runs the base interpreter (``sys.base_prefix``) and adds the
    venv's packages to PYTHONPATH instead. The venv must be inside a mounted folder (the
    checkout's ``.venv``, as ./test.sh makes it, is).
    """
    if sys.prefix == sys.base_prefix:
        return ""
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def stack_env(lab: Lab, config_dir: Path) -> dict[str, str]:
    return {**os.environ,
            "DOCKER_HOST": lab.docker_host,
            "ECOSCALE_HOME": str(project_root()),
            "ECOSCALE_PYTHON": sys.base_prefix,
            "ECOSCALE_SITE_PACKAGES": venv_site_packages(),
            "ECOSCALE_CONFIG_DIR": str(config_dir.resolve()),
            "ECOSCALE_DOCKER_SOCKET": lab.docker_host.removeprefix("unix://"),
            "ECOSCALE_NETWORK": lab.config.network,
            "ECOSCALE_IMAGE": image_name()}


def deploy_stack(lab: Lab, config_dir: Path) -> None:
    """`docker stack deploy` deploy/daemon/stack.yml on the lab's manager."""
    stack = deploy_dir() / "daemon" / "stack.yml"
    done = subprocess.run(["docker", "stack", "deploy", "-c", str(stack), STACK],
                          env=stack_env(lab, config_dir), capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise EcoscaleError(f"docker stack deploy failed: {done.stderr.strip() or done.stdout}")


def remove_stack(lab: Lab) -> None:
    subprocess.run(["docker", "stack", "rm", STACK], env={**os.environ,
                                                         "DOCKER_HOST": lab.docker_host},
                   capture_output=True, text=True, check=False)


def stack_logs(lab: Lab) -> str:
    done = subprocess.run(["docker", "service", "logs", "--raw", DAEMON_SERVICE],
                          env={**os.environ, "DOCKER_HOST": lab.docker_host},
                          capture_output=True, text=True, check=False)
    return done.stdout + done.stderr
