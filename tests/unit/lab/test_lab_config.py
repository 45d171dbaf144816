"""LabConfig: validation (every problem at once), nodes, emulation knobs, round trip."""

from dataclasses import asdict
from pathlib import Path

import pytest

from ecoscale.errors import InputError
from ecoscale.lab.config import DEFAULT_STATE_DIR, GenerationSpec, LabConfig


def test_defaults_are_one_new_manager_and_one_old_node(monkeypatch):
    monkeypatch.delenv("ECOSCALE_LAB_DIR", raising=False)
    config = LabConfig()
    assert config.state_dir == Path(DEFAULT_STATE_DIR)
    manager, old = config.nodes()
    assert (manager.name, manager.generation, manager.manager, manager.netns) == \
        ("new-1", "new", True, None)
    assert (old.name, old.generation, old.manager, old.netns) == \
        ("old-1", "old", False, "eslab-old-1")
    assert (manager.address, old.address) == ("10.213.0.1", "10.213.0.2")
    assert config.manager_generation == "new"


def test_state_dir_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ECOSCALE_LAB_DIR", "/tmp/elsewhere")
    assert LabConfig().state_dir == Path("/tmp/elsewhere")


def test_with_nodes_counts_and_addresses():
    config = LabConfig.with_nodes(new=2, old=3, old_cpu_factor=0.4, state_dir="/tmp/l")
    names = [n.name for n in config.nodes()]
    assert names == ["new-1", "new-2", "old-1", "old-2", "old-3"]
    assert [n.manager for n in config.nodes()] == [True, False, False, False, False]
    assert len({n.address for n in config.nodes()}) == 5
    assert config.generation("old").cpu_factor == 0.4


@pytest.mark.parametrize("changes, fragment", [
    ({"state_dir": "relative/dir"}, "must be an absolute path"),
    ({"state_dir": "/" + "x" * 60}, "longer than"),
    ({"generations": ()}, "generations is empty"),
    ({"generations": (GenerationSpec("new"), GenerationSpec("new"))}, "appears twice"),
    ({"generations": (GenerationSpec("New"),)}, "lower-case"),
    ({"generations": (GenerationSpec("new", nodes=0),)}, "needs nodes >= 1"),
    ({"generations": (GenerationSpec("new"), GenerationSpec("old", cpu_factor=2.0))},
     "cpu_factor must lie in"),
    ({"generations": (GenerationSpec("new"), GenerationSpec("old", node_cpus=0.0))},
     "node_cpus must be > 0"),
    ({"generations": (GenerationSpec("new"), GenerationSpec("old", node_cpus=0.05))},
     "below the kernel's 1 ms minimum"),
    ({"subnet": "8.8.8.0/24"}, "must be private"),
    ({"subnet": "nonsense"}, "is not an IPv4 network"),
    ({"overlay_pool": "10.213.0.0/16"}, "overlaps subnet"),
    ({"gateway_port": 80}, "gateway_port must be"),
    ({"gateway_port": 19090, "prometheus_port": 19090}, "must differ"),
    ({"scrape_interval_s": 0.1}, "scrape_interval_s"),
    ({"timeout_s": 1}, "timeout_s"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_invalid_settings_are_reported_with_a_fix(changes, fragment):
    with pytest.raises(InputError) as caught:
        LabConfig(**{"state_dir": "/tmp/lab", **changes})
    assert any(fragment in p for p in caught.value.problems), caught.value.problems


def test_all_problems_are_reported_at_once():
    with pytest.raises(InputError) as caught:
        LabConfig(state_dir="rel", gateway_port=1, subnet="x")
    assert len(caught.value.problems) >= 3


def test_generation_knobs_give_quota_and_speed():
    config = LabConfig.with_nodes(old_cpu_factor=0.5, old_node_cpus=1.5, state_dir="/tmp/l")
    assert config.generation("new").quota_us(config.cpu_period_us) is None
    assert config.generation("old").quota_us(10_000) == 15_000
    assert config.node_speeds() == {"ecoscale-new-1": 1.0, "ecoscale-old-1": 0.5}
    emulation = config.emulation(host_cpus=2)
    assert emulation["old"]["cfs_quota_us"] == 15_000
    assert emulation["old"]["cfs_period_us"] == 10_000
    assert "cpu_ms / 0.5" in emulation["old"]["speed"]
    assert "cfs_quota_us" in emulation["old"]["capacity"]
    assert emulation["new"]["cfs_quota_us"] is None


def test_config_survives_the_state_file_round_trip():
    config = LabConfig.with_nodes(new=1, old=2, old_cpu_factor=0.3, state_dir="/tmp/l")
    assert LabConfig.from_dict(asdict(config)) == config
    with pytest.raises(InputError, match="saved lab configuration"):
        LabConfig.from_dict({"state_dir": "/tmp/l"})


def test_unknown_generation_names_the_known_ones():
    with pytest.raises(InputError, match="known: new, old"):
        LabConfig(state_dir="/tmp/l").generation("ancient")
