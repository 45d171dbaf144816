"""The replay and its baselines on three generations none of which is called "new" or "old":
the shipped hardware and calibrated profile with their generations renamed gen3 (newest),
gen2 and gen1 (oldest), gen2 a second-life server between the two."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from ecoscale.adapters.files import read_yaml, write_yaml
from ecoscale.control.policy import Decision, Observation
from ecoscale.model.placement import Placement
from ecoscale.paths import profiles_dir
from ecoscale.replay.baselines import baseline_policies
from ecoscale.replay.engine import replay, run_policy
from ecoscale.replay.policies import DEFAULT_POLICY_NAMES, all_policies
from ecoscale.replay.scenario import ReplayOptions, build_scenario

RENAMED = {"new": "gen3", "old": "gen1"}
GENERATIONS = ("gen3", "gen2", "gen1")


@pytest.fixture(scope="module")
def three_generations(tmp_path_factory):
    """(hardware file, profile file) with generations gen3, gen2, gen1."""
    folder = tmp_path_factory.mktemp("generations")
    hardware = read_yaml(profiles_dir() / "hardware" / "cloudlab.yaml")
    shipped = hardware["generations"]
    mid = {**copy.deepcopy(shipped["old"]), "server": "a server between the two (test)",
           "embodied_kg_per_node": 300.0, "peak_w_per_slot": 140}
    hardware["generations"] = {"gen3": shipped["new"], "gen2": mid, "gen1": shipped["old"]}
    hardware["reference"]["newest"] = "gen3"
    hardware_file = folder / "hardware.yaml"
    write_yaml(hardware_file, hardware, "# cloudlab, three generations (test)\n")
    profile = read_yaml(profiles_dir() / "socialNetwork" / "calibrated.yaml")
    profile["services"] = {
        service: {"gen3": curves["new"], "gen2": copy.deepcopy(curves["old"]),
                  "gen1": curves["old"]}
        for service, curves in profile["services"].items()}
    profile_file = folder / "profile.yaml"
    write_yaml(profile_file, profile, "# calibrated, three generations (test)\n")
    return hardware_file, profile_file


@pytest.fixture(scope="module")
def scenario(three_generations):
    hardware_file, profile_file = three_generations
    return build_scenario(ReplayOptions(profile=str(profile_file), hardware=str(hardware_file),
                                        duration="3h", step="5m"))


def generations_used(run) -> set[str]:
    return {placed.generation for placement in run.placements for _, placed in placement.items}


def test_the_scenario_has_three_generations_and_none_is_new(scenario):
    assert scenario.model.hardware.newest == "gen3"
    assert scenario.model.profile.generations == GENERATIONS


@dataclass(frozen=True)
class Hold:
    """Keeps whatever runs: shows what the engine starts from."""

    name: str = "hold"
    feedback: frozenset[str] = frozenset()

    def initial_state(self) -> None:
        return None

    def decide(self, observation: Observation, state: None) -> tuple[Decision, None]:
        return Decision(observation.current), state


def test_the_engine_starts_on_the_newest_generation(scenario):
    run = run_policy(scenario, Hold())
    assert set(run.placements) == {Placement.uniform(scenario.model.services, "gen3")}
    assert run.moves.sum() == 0


@pytest.mark.parametrize("policy,expected", [
    pytest.param("all-new", {"gen3"}, id="all-new-on-the-newest"),
    pytest.param("all-old", {"gen1"}, id="all-old-on-the-oldest"),
    pytest.param("hpa-cpu", {"gen3"}, id="hpa-on-the-newest"),
    pytest.param("carbon-ceiling", {"gen3"}, id="carbon-ceiling-on-the-newest"),
])
def test_the_baselines_run_on_the_hardware_s_generations(scenario, policy, expected):
    model = scenario.model
    policies = baseline_policies(model.services, model.profile.generations,
                                 model.hardware.newest)
    result = replay(scenario, [p for p in policies if p.name == policy])
    assert generations_used(result.runs[0]) == expected


def test_every_policy_replays_without_a_generation_called_new(scenario):
    result = replay(scenario, all_policies(scenario))
    rows = result.summary().set_index("policy")
    assert list(rows.index) == list(DEFAULT_POLICY_NAMES)
    assert rows.loc["all-new", "saving_vs_all_new_pct"] == 0.0
    assert rows.loc["all-old", "saving_vs_all_new_pct"] > 0.0
    assert rows.loc["all-old", "embodied_kg"] == 0.0          # second-life servers
    for run in result.runs:
        assert generations_used(run) <= set(GENERATIONS), run.name
    ecoscale = next(run for run in result.runs if run.name == "ecoscale")
    assert generations_used(ecoscale) - {"gen3"}, "ecoscale kept nothing on older servers"
