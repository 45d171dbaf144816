"""emulation.yaml of each app: validated against its topology, turned into the JSON document."""

import json

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.emulator.spec import AppSpec
from ecoscale.errors import InputError
from ecoscale.lab.apps import load_app, parse_emulation

APPS = ["socialNetwork", "hotelReservation", "mediaMicroservices"]


@pytest.mark.parametrize("app", APPS)
def test_shipped_emulation_covers_every_service_and_the_emulator_reads_it(app):
    lab_app = load_app(app)
    assert set(lab_app.work) == set(lab_app.topology.services)
    spec = AppSpec.from_dict(json.loads(lab_app.document_bytes()))
    assert spec.frontend == lab_app.topology.frontend
    assert {e.name for e in spec.endpoints} == {e.name for e in lab_app.topology.endpoints}


@pytest.mark.parametrize("app", APPS)
def test_logic_services_burn_cpu_and_databases_wait(app):
    lab_app = load_app(app)
    kinds = {name: s.kind for name, s in lab_app.topology.services.items()}
    for name, work in lab_app.work.items():
        if kinds[name] == "mongodb":
            assert work.io_ms > 5 * work.cpu_ms, name
        if kinds[name] in ("memcached", "redis"):
            assert work.cpu_ms <= 0.1 and work.io_ms == 0, name


def test_social_network_has_a_cpu_bound_and_an_io_bound_service_on_the_main_path():
    work = load_app("socialNetwork").work
    assert work["home-timeline-service"].cpu_ms >= 1.5
    assert work["home-timeline-service"].io_ms == 0
    assert work["post-storage-mongodb"].io_ms >= 10 * work["post-storage-mongodb"].cpu_ms


def test_spec_id_changes_with_the_document():
    lab_app = load_app("socialNetwork")
    assert lab_app.spec_id() == load_app("socialNetwork").spec_id()
    from dataclasses import replace

    slower = replace(lab_app, node_speed={"ecoscale-old-1": 0.5})
    assert slower.spec_id() != lab_app.spec_id()
    assert slower.document()["node_speed"] == {"ecoscale-old-1": 0.5}


def test_bad_emulation_files_report_every_problem():
    topology = load_topology("socialNetwork")
    data = {"app": "socialNetwork",
            "kinds": {"logic": {"cpu_ms": "fast"}, "memcached": {"cpu_ms": 0.1}},
            "services": {"no-such-service": {"cpu_ms": 1}, "text-service": {"gpu_ms": 1}}}
    with pytest.raises(InputError) as caught:
        parse_emulation(data, topology, "emulation.yaml")
    text = "\n".join(caught.value.problems)
    assert "kinds.logic.cpu_ms: must be a number" in text
    assert "'no-such-service' is not a service" in text
    assert "unknown key 'gpu_ms'" in text
    assert "no defaults for kind 'mongodb'" in text
