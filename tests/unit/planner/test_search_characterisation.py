"""Characterisation of the placement search: minnew, noscale and the oracle must return the
placements recorded in ``search_characterisation.json``.

The fixture was recorded from the search as it was before its state-object refactor
(issue 12); its ``produced_by`` says how. The cases cover the shipped profiles (calibrated,
lab), a measured profile where the stage pass matters, the seeded synthetic generator, two and
three generations, C(t) at a clean and a dirty grid, two new replicas, a tighter SLO, and
small pass and evaluation budgets, at load levels from 10 % to 120 % of the peak.

Re-record (only when a change of the search's results is intended, and say so in the commit):

    python3 -m tests.unit.planner.test_search_characterisation --record
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ecoscale.adapters.files import load_hardware, load_profile, load_topology
from ecoscale.model.app import AppModel, default_slo
from ecoscale.model.placement import Placement
from ecoscale.planner.oracle import exhaustive_placement, optimal_placement
from ecoscale.planner.search import CarbonTerms, carbon_terms, minnew, noscale, prune, rank
from ecoscale.planner.synthetic import synthetic_app

sys.path.insert(0, str(Path(__file__).parent))
from test_planner import toy_model  # noqa: E402  (the toy app of the planner tests)

FIXTURE = Path(__file__).with_name("search_characterisation.json")
LEVELS = tuple(round(0.05 * i, 2) for i in range(2, 21)) + (1.1, 1.2)
"""Fractions of the peak: the policy table's default ladder."""
FEW_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0, 1.2)
ORACLE_LEVELS = (0.3, 0.7, 1.0, 1.2)
HOME_TIMELINE_5MS = Path(__file__).parents[2] / "fixtures" / "profiles" / \
    "socialNetwork-lab-home-timeline-5ms.yaml"


def shipped(app: str, profile: str) -> Callable[[], AppModel]:
    return lambda: AppModel(load_topology(app), load_profile(app, profile), load_hardware())


def synthetic(services: int, seed: int) -> Callable[[], AppModel]:
    def build() -> AppModel:
        made = synthetic_app(services, seed)
        return AppModel(made.topology, made.profile, load_hardware())
    return build


MODELS: dict[str, Callable[[], AppModel]] = {
    "socialNetwork-calibrated": shipped("socialNetwork", "calibrated"),
    "socialNetwork-lab": shipped("socialNetwork", "lab"),
    "hotelReservation-calibrated": shipped("hotelReservation", "calibrated"),
    "mediaMicroservices-calibrated": shipped("mediaMicroservices", "calibrated"),
    "socialNetwork-home-timeline-5ms": shipped("socialNetwork", str(HOME_TIMELINE_5MS)),
    "synthetic-30-seed-1": synthetic(30, 1),
    "synthetic-30-seed-2": synthetic(30, 2),
    "synthetic-30-seed-3": synthetic(30, 3),
    "synthetic-60-seed-4": synthetic(60, 4),
    "synthetic-120-seed-5": synthetic(120, 5),
    "synthetic-300-seed-6": synthetic(300, 6),
    "toy-two-generations": toy_model,
    "toy-three-generations": lambda: toy_model(("new", "mid", "old")),
}


@dataclass(frozen=True)
class Variant:
    """How one run of the search differs from the default: C(t), new replicas, SLO, budgets."""

    name: str
    levels: tuple[float, ...] = FEW_LEVELS
    ci_g_per_kwh: float | None = None
    max_new_replicas: int = 1
    slo_factor: float = 1.0
    minnew_kwargs: dict[str, int] = field(default_factory=dict)

    def terms(self, model: AppModel) -> CarbonTerms:
        return carbon_terms(model, self.ci_g_per_kwh, self.max_new_replicas)


VARIANTS = (
    Variant("reference", levels=LEVELS),
    Variant("clean-grid-100", ci_g_per_kwh=100.0),
    Variant("dirty-grid-600", ci_g_per_kwh=600.0),
    Variant("two-new-replicas", max_new_replicas=2),
    Variant("slo-85-percent", slo_factor=0.85),
    Variant("pair-budget-30", minnew_kwargs={"pair_budget": 30}),
    Variant("two-passes", minnew_kwargs={"max_passes": 2}),
)


def encode(placement: Placement | None) -> str | None:
    """Compact text: the most common option, then every service placed otherwise, e.g.
    'old*1; a=old*2 fe=new*1'."""
    if placement is None:
        return None
    counts = Counter(p for _, p in placement.items)
    common = max(counts, key=lambda p: (counts[p], str(p)))
    others = " ".join(f"{s}={p.generation}*{p.replicas}" for s, p in placement.items
                      if p != common)
    return f"{common.generation}*{common.replicas}; {others}"


def search_results(model: AppModel, variant: Variant) -> Iterator[dict[str, object]]:
    """minnew and noscale at every level of ``variant``, pruned and ranked at the peak with
    the reference C (as ``build_table`` does)."""
    slo_ms, peak_qps, _ = default_slo(model)
    slo_ms *= variant.slo_factor
    reference = carbon_terms(model)
    pruning = prune(model, peak_qps, slo_ms, reference)
    ranking = [s for s, _ in rank(model, list(pruning.critical), peak_qps, reference)[0]]
    terms = variant.terms(model)
    for fraction in variant.levels:
        load = fraction * peak_qps
        plan = minnew(model, load, slo_ms, ranking, pruning, terms, **variant.minnew_kwargs)
        base, _ = noscale(model, load, slo_ms, ranking, pruning, terms)
        yield {"fraction": fraction,
               "minnew": encode(plan.placement),
               "minnew_feasible": plan.feasible, "minnew_evaluations": plan.evaluations,
               "noscale": encode(base.placement),
               "noscale_feasible": base.feasible, "noscale_evaluations": base.evaluations}


def oracle_results(model: AppModel, variant: Variant) -> Iterator[dict[str, object]]:
    """The MILP optimum (and, for apps of at most 5 services, the exhaustive one)."""
    slo_ms, peak_qps, _ = default_slo(model)
    terms = variant.terms(model)
    for fraction in ORACLE_LEVELS:
        load = fraction * peak_qps
        found = optimal_placement(model, load, slo_ms, terms)
        row: dict[str, object] = {"fraction": fraction, "status": found.status,
                                  "options": found.options,
                                  "placement": encode(found.placement)}
        if len(model.services) <= 5:
            brute = exhaustive_placement(model, load, slo_ms, terms)
            row.update(exhaustive=encode(brute.placement),
                       exhaustive_status=brute.status, combinations=brute.options)
        yield row


ORACLE_VARIANTS = (VARIANTS[0], VARIANTS[2], VARIANTS[3])
PLACEMENT_FIELDS = ("minnew", "noscale", "placement", "exhaustive")
"""Row fields that hold a placement: stored once per case in its ``placements`` list, the
rows name it by its index there."""


def intern(row: dict[str, object], placements: list[str | None]) -> dict[str, object]:
    """``row`` with each placement replaced by its index in ``placements`` (added there if
    new)."""
    for key in PLACEMENT_FIELDS:
        if key in row:
            if row[key] not in placements:
                placements.append(row[key])
            row[key] = placements.index(row[key])
    return row


def record() -> dict[str, object]:
    """Every case's results, each distinct placement written once."""
    cases: dict[str, object] = {}
    for name, build in MODELS.items():
        model = build()
        placements: list[str | None] = []
        search = {v.name: [intern(r, placements) for r in search_results(model, v)]
                  for v in VARIANTS}
        oracle = {v.name: [intern(r, placements) for r in oracle_results(model, v)]
                  for v in ORACLE_VARIANTS}
        cases[name] = {"placements": placements, "search": search, "oracle": oracle}
    return cases


def resolved(case: dict[str, object]) -> dict[str, dict[str, list[dict[str, object]]]]:
    """A recorded case with its rows' placement indices replaced by the placements."""
    placements = case["placements"]
    return {part: {variant: [{k: placements[v] if k in PLACEMENT_FIELDS else v
                              for k, v in row.items()} for row in rows]
                   for variant, rows in case[part].items()} for part in ("search", "oracle")}


def to_json(data: dict[str, object]) -> str:
    """JSON with one row (or placement) a line, so that a diff of the fixture reads."""
    lines = ["{", f' "produced_by": {json.dumps(data["produced_by"])},', ' "cases": {']
    cases = data["cases"]
    for i, (name, case) in enumerate(cases.items()):
        lines.append(f"  {json.dumps(name)}: {{")
        lines.append('   "placements": [')
        lines.extend(f"    {json.dumps(p)}" + ("," if j < len(case["placements"]) - 1 else "")
                     for j, p in enumerate(case["placements"]))
        lines.append("   ],")
        for part in ("search", "oracle"):
            lines.append(f'   "{part}": {{')
            for k, (variant, rows) in enumerate(case[part].items()):
                lines.append(f"    {json.dumps(variant)}: [")
                lines.extend(f"     {json.dumps(r)}" + ("," if j < len(rows) - 1 else "")
                             for j, r in enumerate(rows))
                lines.append("    ]" + ("," if k < len(case[part]) - 1 else ""))
            lines.append("   }" + ("," if part == "search" else ""))
        lines.append("  }" + ("," if i < len(cases) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, dict[str, list[dict[str, object]]]]]:
    return {name: resolved(case)
            for name, case in json.loads(FIXTURE.read_text())["cases"].items()}


@pytest.fixture(scope="module", params=list(MODELS), ids=list(MODELS))
def case(request: pytest.FixtureRequest) -> tuple[str, AppModel]:
    return request.param, MODELS[request.param]()


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_minnew_and_noscale_return_the_recorded_placements(case, variant, recorded):
    name, model = case
    expected = recorded[name]["search"][variant.name]
    got = list(search_results(model, variant))
    assert [row["fraction"] for row in got] == [row["fraction"] for row in expected]
    for row, want in zip(got, expected, strict=True):
        assert row == want, f"{name} {variant.name} at {row['fraction']:.0%} of the peak"


@pytest.mark.parametrize("variant", ORACLE_VARIANTS, ids=[v.name for v in ORACLE_VARIANTS])
def test_the_oracle_returns_the_recorded_placements(case, variant, recorded):
    name, model = case
    expected = recorded[name]["oracle"][variant.name]
    got = list(oracle_results(model, variant))
    for row, want in zip(got, expected, strict=True):
        assert row == want, f"{name} {variant.name} at {row['fraction']:.0%} of the peak"


def test_the_fixture_covers_every_case():
    cases = json.loads(FIXTURE.read_text())["cases"]
    assert set(cases) == set(MODELS)
    for name, results in cases.items():
        assert set(results["search"]) == {v.name for v in VARIANTS}, name
        assert set(results["oracle"]) == {v.name for v in ORACLE_VARIANTS}, name


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python3 -m tests.unit.planner.test_search_characterisation --record")
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "unknown"
    FIXTURE.write_text(to_json({
        "produced_by": ("python3 -m tests.unit.planner.test_search_characterisation --record, from "
                        f"the search at commit {commit} (before the state-object refactor of "
                        "planner/search.py, issue 12); a placement reads 'the most "
                        "common option; every service placed otherwise'"),
        "cases": record(),
    }))
    print(f"wrote {FIXTURE}")
