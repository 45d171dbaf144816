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
    ({"generations": (GenerationSpec("new", slot_cpus=0.0),)}, "slot_cpus must be > 0"),
    ({"generations": (GenerationSpec("new", slot_cpus=0.02),)},
     "below the kernel's 1 ms minimum quota; raise slot_period_us"),
    ({"slot_period_us": 500}, "slot_period_us must lie in"),
    ({"kept_cpus": -1}, "kept_cpus must be >= 0"),
    ({"subnet": "8.8.8.0/24"}, "must be private"),
    ({"subnet": "nonsense"}, "is not an IPv4 network"),
    ({"overlay_pool": "10.213.0.0/16"}, "overlaps subnet"),
    ({"gateway_port": 80}, "gateway_port must be"),
    ({"gateway_port": 19090, "prometheus_port": 19090}, "must differ"),
    ({"scrape_interval_s": 0.1}, "scrape_interval_s"),
    ({"engine_cpu_shares": 1}, "engine_cpu_shares must be an integer in 2..262144"),
    ({"engine_cpu_shares": 64.5}, "engine_cpu_shares must be an integer"),
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


SLOTTED = LabConfig.with_nodes(slot_cpus=0.05, old_node_cpus=None, state_dir="/tmp/l")


def test_a_replica_is_a_slot_on_both_generations_when_asked():
    config = SLOTTED
    assert config.slot_cpus() == {"new": 0.05, "old": 0.05}
    assert all(g.node_cpus is None for g in config.generations)   # the quota is an option
    emulation = config.emulation(host_cpus=2)
    assert emulation["old"]["cpus_per_replica"] == 0.05
    assert emulation["old"]["slot_period_us"] == 20_000
    assert "slots of 0.05 host CPU per task" in emulation["old"]["capacity"]
    assert "cpu_ms / 0.5" in emulation["old"]["speed"]         # old cores stay slower
    unslotted = LabConfig(state_dir="/tmp/l")           # the default: no slots
    assert unslotted.slot_cpus() == {}
    assert unslotted.emulation(2)["new"]["cpus_per_replica"] == 1.0


def test_the_slot_budget_counts_every_replica_against_the_hosts_cores_less_the_kept_share():
    config = SLOTTED
    budget = config.slot_budget(2, {"a": ("new", 20), "b": ("old", 6)})
    assert (budget.slots, budget.budget_cpus) == (26, 1.5)
    assert budget.used_cpus == pytest.approx(1.3) and not budget.overcommitted
    assert budget.text().startswith("26 slots = 1.30 of 1.5 CPUs (new 20 x 0.05, old 6 x 0.05;")
    assert "0.5 kept for dockerd, Prometheus" in budget.text()
    over = config.slot_budget(2, {"a": ("new", 20), "b": ("old", 11)})
    assert over.overcommitted and over.text().startswith("31 slots = 1.55 of 1.5 CPUs")
    # a generation without slots holds none
    mixed = LabConfig(state_dir="/tmp/l", generations=(
        GenerationSpec("new", slot_cpus=0.1), GenerationSpec("old", cpu_factor=0.5)))
    assert mixed.slot_budget(2, {"a": ("new", 3), "b": ("old", 40)}).slots == 3
