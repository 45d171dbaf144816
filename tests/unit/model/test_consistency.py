"""model.consistency: a profile against its topology and hardware, a table against the model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ecoscale.adapters.files import parse_hardware, parse_profile
from ecoscale.errors import InputError
from ecoscale.model.app import AppModel, check_table_fits
from ecoscale.model.consistency import profile_problems, table_problems
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.model.topology import parse_topology
from ecoscale.planner.table import table_from_data

BASE = Path(__file__).resolve().parents[2] / "fixtures" / "bad" / "base"


def _load(name):
    return yaml.safe_load((BASE / name).read_text())


@pytest.fixture
def parts():
    return (parse_topology(_load("topology.yaml"), "topology.yaml"),
            parse_profile(_load("profile.yaml"), "profile.yaml"),
            parse_hardware(_load("hardware.yaml"), "hardware.yaml"))


def test_good_files_have_no_problems(parts):
    topology, profile, hardware = parts
    assert profile_problems(profile, topology, hardware) == []
    model = AppModel(topology, profile, hardware)
    check_table_fits(table_from_data(_load("table.yaml"), "table.yaml"), model, "table.yaml")


def _drop_service(profile, name):
    return replace(profile, curves={s: c for s, c in profile.curves.items() if s != name})


def _rename_generation(hardware, old, new):
    gens = {(new if g == old else g): v for g, v in hardware.generations.items()}
    return replace(hardware, generations=gens)


@pytest.mark.parametrize("change,fragments", [
    (lambda t, p, h: (t, _drop_service(p, "cache"), h),
     ["profile.yaml has no curves for service 'cache' of the topology topology.yaml"]),
    (lambda t, p, h: (t, replace(p, curves={**p.curves, "ghost": p.curves["fe"]}), h),
     ["has curves for ghost, which the topology topology.yaml does not have"]),
    (lambda t, p, h: (t, replace(p, curves={**p.curves, "db": {"new": p.curves["db"]["new"]}}),
                      h),
     ["service 'db' lacks generations ['old']"]),
    (lambda t, p, h: (t, p, _rename_generation(h, "old", "legacy")),
     ["profile.yaml uses generation(s) old, which the hardware hardware.yaml does not describe "
      "(it has new, legacy)"]),
    (lambda t, p, h: (t, p, replace(_rename_generation(h, "new", "newer"), newest="newer")),
     ["uses generation(s) new", "the newest generation 'newer' of the hardware hardware.yaml "
      "has no curves"]),
], ids=["missing-service", "extra-service", "missing-generation", "generation-not-in-hardware",
        "newest-not-profiled"])
def test_profile_problems_name_both_files(parts, change, fragments):
    topology, profile, hardware = change(*parts)
    problems = profile_problems(profile, topology, hardware)
    for fragment in fragments:
        assert any(fragment in p for p in problems), problems
    with pytest.raises(InputError):
        AppModel(topology, profile, hardware)


def _with_level_placement(table, items):
    level = replace(table.levels[0], placement=Placement(tuple(items)))
    return replace(table, levels=(level, *table.levels[1:]))


@pytest.mark.parametrize("change,fragment", [
    (lambda tb: _with_level_placement(tb, [*tb.levels[0].placement.items,
                                           ("ghost", ServicePlacement("new", 1))]),
     "level 1 places ghost, which the topology topology.yaml does not have"),
    (lambda tb: _with_level_placement(tb, [i for i in tb.levels[0].placement.items
                                           if i[0] != "fe"]),
     "level 1 does not place the front end 'fe'"),
    (lambda tb: _with_level_placement(tb, [i for i in tb.levels[0].placement.items
                                           if i[0] != "cache"]),
     "level 1 does not place cache of the topology"),
    (lambda tb: _with_level_placement(tb, [(s, ServicePlacement("ancient", 1))
                                           for s, _ in tb.levels[0].placement.items]),
     "level 1 uses generation(s) ancient, which the profile and hardware do not have"),
    (lambda tb: replace(tb, app="socialNetwork"), "the table is for app 'socialNetwork'"),
    (lambda tb: replace(tb, newest="old"), "newest_generation 'old' is not the hardware's"),
    (lambda tb: replace(tb, ranking=(("ghost", 1.0),)), "ranking names ghost"),
], ids=["ghost-service", "missing-front-end", "missing-service", "unknown-generation",
        "other-app", "other-newest", "ranking-ghost"])
def test_table_problems(parts, change, fragment):
    topology, _, _ = parts
    table = change(table_from_data(_load("table.yaml"), "table.yaml"))
    problems = table_problems(table, topology, ("new", "old"), "new")
    assert any(fragment in p for p in problems), problems
