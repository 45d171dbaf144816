"""`ecoscale run --config deploy/daemon/lab.yaml --check` on the running lab: the shipped lab
config reaches the lab's Prometheus and Docker as they are, and a broken one says which
adapter fails."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from ecoscale.paths import deploy_dir, project_root

LAB_CONFIG = deploy_dir() / "daemon" / "lab.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecoscale", *args], capture_output=True,
                          text=True, timeout=300, cwd=project_root())


@pytest.fixture
def lab_config(tmp_path):
    """deploy/daemon/lab.yaml as shipped, beside the table its README command writes."""
    config = tmp_path / "lab.yaml"
    shutil.copy(LAB_CONFIG, config)
    table = tmp_path / yaml.safe_load(LAB_CONFIG.read_text())["table"]
    done = run("plan", "--profile", "lab", "--out", str(table))
    assert done.returncode == 0, done.stderr
    return config


def test_the_shipped_lab_config_points_at_this_lab(social_network):
    shipped = yaml.safe_load(LAB_CONFIG.read_text())
    assert shipped["docker_host"] == social_network.docker_host
    assert shipped["prometheus"]["url"] == social_network.prometheus_url
    assert shipped["profile"] == "lab"


def test_check_passes_on_the_running_lab(social_network, lab_config):
    done = run("run", "--config", str(lab_config), "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    for component in ("profile", "prometheus", "docker", "carbon"):
        assert f"ok   {component}:" in done.stdout or f"warn {component}:" in done.stdout, \
            done.stdout
    assert "a Swarm manager, 26 managed services" in done.stdout
    assert "check ok" in done.stdout


def test_check_names_the_adapter_that_fails(social_network, lab_config):
    text = lab_config.read_text().replace("127.0.0.1:19090", "127.0.0.1:19")
    lab_config.write_text(text)
    done = run("run", "--config", str(lab_config), "--check")
    assert done.returncode == 1
    assert "FAIL prometheus" in done.stdout and "ecoscale lab status" in done.stdout
    assert "ok   docker" in done.stdout and "check FAILED: prometheus" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
