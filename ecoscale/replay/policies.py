"""Every policy a replay compares, built for one scenario."""

from __future__ import annotations

from typing import Any

from ecoscale.replay.baselines import baseline_policies
from ecoscale.replay.engine import Scenario


def all_policies(scenario: Scenario) -> list[Any]:
    """The baselines (all-new, all-old, hpa-cpu, carbon-ceiling), in report order."""
    model = scenario.model
    return baseline_policies(model.services, model.profile.generations)
