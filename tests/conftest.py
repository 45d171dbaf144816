"""Shared test fixtures: the shipped apps and models."""

from __future__ import annotations

import pytest

from ecoscale.adapters.files import load_hardware, load_profile, load_topology
from ecoscale.model.app import AppModel


@pytest.fixture(scope="session")
def social_topology():
    return load_topology("socialNetwork")


@pytest.fixture(scope="session")
def hardware():
    return load_hardware()


@pytest.fixture(scope="session")
def social_model(social_topology, hardware):
    return AppModel(social_topology, load_profile("socialNetwork", "calibrated"), hardware)
