import math

import pytest

from ecoscale.adapters.files import load_hardware, load_profile, load_topology
from ecoscale.errors import InputError
from ecoscale.model.app import AppModel, default_slo
from ecoscale.model.packing import PackedPlacement, packed_e2e_p99_at
from ecoscale.model.placement import Placement
from ecoscale.planner.rightsize import (
    SOCKET_CAPACITIES,
    pack_for_slo,
    packed_capacity_qps,
    packed_rate_g_per_h,
    rightsize,
)
from ecoscale.planner.search import carbon_terms
from ecoscale.planner.table import (
    build_table,
    right_size_table,
    table_from_data,
    table_to_data,
    unpacked_view,
)


@pytest.fixture(scope="module")
def calibrated():
    model = AppModel(load_topology("socialNetwork"), load_profile("socialNetwork", "calibrated"),
                     load_hardware())
    slo, peak, _ = default_slo(model)
    return model, slo, peak


@pytest.fixture(scope="module")
def sized(calibrated):
    model, slo, peak = calibrated
    return build_table(model, slo, peak, fractions=(0.2, 0.5, 0.7, 0.9, 1.0), right_size=True)


def test_every_right_sized_level_keeps_the_slo_under_the_co_location_model(calibrated, sized):
    model, slo, _ = calibrated
    for level in sized.levels:
        assert level.right_sized, level.max_load_qps
        p99 = packed_e2e_p99_at(model, level.placement, level.max_load_qps)
        assert p99 <= slo * (1 + 1e-9)
        assert level.p99_ms == pytest.approx(p99)
        assert level.capacity_qps >= level.max_load_qps
        # the capacity is the edge: just above it the packing misses the SLO
        above = packed_e2e_p99_at(model, level.placement, level.capacity_qps * 1.001)
        assert packed_e2e_p99_at(model, level.placement, level.capacity_qps) <= slo * (1 + 1e-9)
        assert above > slo or level.capacity_qps == level.max_load_qps * 1e3
        for socket in level.placement.sockets:
            assert len(socket.replicas) == 1 or socket.reserved <= level.socket_capacity + 1e-9


def test_right_sizing_saves_carbon_at_every_level(calibrated, sized):
    model, slo, peak = calibrated
    plain = build_table(model, slo, peak, fractions=(0.2, 0.5, 0.7, 0.9, 1.0))
    for packed, dedicated in zip(sized.levels, plain.levels, strict=True):
        assert packed.carbon_g_per_h < dedicated.carbon_g_per_h, packed.max_load_qps
    assert sized.search["right_sized_levels"] == len(sized.levels)


def test_the_pass_beats_packing_the_levels_own_plan(calibrated):
    """The lever: at high load the level's own plan has no latency slack to pack into; the
    pass finds a placement with more replicas that packs onto fewer sockets."""
    model, slo, peak = calibrated
    load = 0.7 * peak
    plain = build_table(model, slo, peak, fractions=(0.7, 1.0, 1.1))
    ci = carbon_terms(model).ci_g_per_kwh
    own = pack_for_slo(model, plain.levels[0].placement, load, slo)
    bases = [lv.placement for lv in plain.levels]
    chosen = rightsize(model, load, slo, bases, ci)
    assert chosen is not None and chosen.tried == len(set(bases)) * len(SOCKET_CAPACITIES)
    assert chosen.carbon_g_per_h < packed_rate_g_per_h(model, own.packed, load, ci)
    assert len(chosen.plan.packed.sockets) < len(own.packed.sockets)


def test_nothing_right_sized_when_no_packing_keeps_the_slo(calibrated):
    model, _, peak = calibrated
    ci = carbon_terms(model).ci_g_per_kwh
    assert rightsize(model, peak, 0.5, [Placement.uniform(model.services, "new")], ci) is None


@pytest.mark.parametrize("fraction", [0.3, 0.8], ids=["30%", "80%"])
def test_capacity_is_monotone_in_the_slo(calibrated, sized, fraction):
    model, slo, peak = calibrated
    level = sized.levels[1]
    tight = packed_capacity_qps(model, level.placement, slo * 0.9, fraction * level.max_load_qps)
    loose = packed_capacity_qps(model, level.placement, slo, fraction * level.max_load_qps)
    assert tight <= loose


def test_right_size_table_equals_building_with_right_size(calibrated, sized):
    model, slo, peak = calibrated
    plain = build_table(model, slo, peak, fractions=(0.2, 0.5, 0.7, 0.9, 1.0))
    again = right_size_table(model, plain)
    assert [lv.placement for lv in again.levels] == [lv.placement for lv in sized.levels]
    view = unpacked_view(again)
    assert all(type(lv.placement) is Placement for lv in view.levels)
    assert [lv.placement.items for lv in view.levels] == [lv.placement.items
                                                          for lv in again.levels]


def test_shares_and_sockets_round_trip_through_the_table_file(sized):
    data = table_to_data(sized)
    level = data["levels"][0]
    assert all("share" in spec for spec in level["placement"].values())
    assert level["socket_capacity"] in SOCKET_CAPACITIES
    again = table_from_data(data, "t.yaml")
    for before, after in zip(sized.levels, again.levels, strict=True):
        assert isinstance(after.placement, PackedPlacement)
        assert after.placement.items == before.placement.items
        assert ([[n for n, _ in s.replicas] for s in after.placement.sockets]
                == [[n for n, _ in s.replicas] for s in before.placement.sockets])
        for service in before.placement:
            assert after.placement.share(service) == pytest.approx(
                before.placement.share(service), abs=1e-6)
        assert after.socket_capacity == before.socket_capacity


def test_shares_without_sockets_are_packed_at_the_socket_capacity(sized):
    data = table_to_data(sized)
    del data["levels"][0]["sockets"]
    level = table_from_data(data, "t.yaml").levels[0]
    assert isinstance(level.placement, PackedPlacement)
    assert all(s.reserved <= level.socket_capacity + 1e-9 or len(s.replicas) == 1
               for s in level.placement.sockets)


def test_a_table_without_shares_loads_as_dedicated_slots(calibrated):
    model, slo, peak = calibrated
    data = table_to_data(build_table(model, slo, peak, fractions=(0.5, 1.0)))
    assert all("share" not in spec for lv in data["levels"] for spec in lv["placement"].values())
    table = table_from_data(data, "old.yaml")
    assert not any(lv.right_sized for lv in table.levels)
    assert all(math.isnan(lv.socket_capacity) for lv in table.levels)


def _drop_one_share(data):
    spec = next(iter(data["levels"][0]["placement"].values()))
    del spec["share"]


def _socket_of_unknown(data):
    data["levels"][0]["sockets"][0] = ["ghost"]


def _missing_replica(data):
    data["levels"][0]["sockets"].pop()


def _bad_share(data):
    next(iter(data["levels"][0]["placement"].values()))["share"] = 1.5


@pytest.mark.parametrize("change,fragment", [
    (_drop_one_share, "gives every service a share; missing for"),
    (_socket_of_unknown, r"sockets 1: expected a list of the services"),
    (_missing_replica, "every replica is on one socket"),
    (_bad_share, "share"),
], ids=["share-missing", "unknown-service", "replica-off-sockets", "share-above-1"])
def test_bad_packings_are_reported_with_the_field(sized, change, fragment):
    data = table_to_data(sized)
    change(data)
    with pytest.raises(InputError, match=fragment):
        table_from_data(data, "bad.yaml")
