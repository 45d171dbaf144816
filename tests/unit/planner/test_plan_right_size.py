"""`ecoscale plan --right-size`: the levels' shares and sockets in the text, --json and the
table file, and the file's round trip through the loader, `run --check` and `replay --table`."""

import json

import pytest

from ecoscale.adapters.files import load_table
from ecoscale.cli import main
from ecoscale.model.packing import PackedPlacement
from ecoscale.planner.table import SHARE_DIGITS

LEVELS = ["--levels", "0.3,0.6,1.0"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The table file and --json document of one right-sized plan."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("sized")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "--right-size", "--json", *LEVELS,
                     "--out", str(folder / "t.yaml")]) == 0
    return folder / "t.yaml", json.loads(out.getvalue())


def test_the_json_gives_every_level_its_shares_and_sockets(planned):
    path, document = planned
    assert document["search"]["right_sized_levels"] == len(document["levels"]) == 3
    for level in document["levels"]:
        placement = level["placement"]
        assert all(0 < spec["share"] <= 1 for spec in placement.values())
        replicas = sum(spec["replicas"] for spec in placement.values())
        assert sum(len(socket) for socket in level["sockets"]) == replicas
        assert sum(level["sockets_in_use"].values()) == len(level["sockets"]) < replicas
        assert 0 < level["socket_capacity"] <= 1


def test_the_file_loads_as_the_plan_printed_it(planned):
    path, document = planned
    table = load_table(path)
    assert table.right_sized
    for level, printed in zip(table.levels, document["levels"], strict=True):
        assert isinstance(level.placement, PackedPlacement)
        for service, spec in printed["placement"].items():
            assert level.placement[service].replicas == spec["replicas"]
            assert level.placement.share(service) == pytest.approx(spec["share"],
                                                                   abs=10 ** -SHARE_DIGITS)
        assert [[name for name, _ in s.replicas] for s in level.placement.sockets] == (
            printed["sockets"])
        assert level.socket_capacity == pytest.approx(printed["socket_capacity"])


def test_the_text_lists_packing_sockets_and_shares(tmp_path, capsys):
    assert main(["plan", "--right-size", *LEVELS, "--out", str(tmp_path / "t.yaml")]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if "max req/s" in line)
    assert "replicas" in header and "packed" in header and "sockets" in header
    assert "right-sized levels, per service" in text
    table = load_table(tmp_path / "t.yaml")
    first = table.levels[0].placement
    assert f"nginx-thrift {first['nginx-thrift']}" in text
    assert f"{first.share('nginx-thrift'):.3f}" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_without_the_flag_the_table_has_dedicated_slots(tmp_path, capsys):
    assert main(["plan", "--json", *LEVELS, "--out", str(tmp_path / "t.yaml")]) == 0
    document = json.loads(capsys.readouterr().out)
    assert not load_table(tmp_path / "t.yaml").right_sized
    assert all("sockets" not in level and all("share" not in s
                                              for s in level["placement"].values())
               for level in document["levels"])


def test_run_check_accepts_a_right_sized_table(planned, tmp_path, capsys, monkeypatch):
    from ecoscale.daemon import main as daemon_main
    from ecoscale.testing import FakeAdapters, RecordedPrometheus, vector_reply

    path, _ = planned
    config = tmp_path / "c.yaml"
    # a right-sized table needs the CPUs of one socket per generation (its shares' budgets)
    config.write_text(f"app: socialNetwork\ntable: {path}\nprometheus: {{qps: a, p99_ms: b}}\n"
                      "slot_cpus: {new: 1.0, old: 1.0}\n")
    prometheus = RecordedPrometheus({q: vector_reply(({}, 1.0, 1.0)) for q in ("a", "b")})
    monkeypatch.setattr(daemon_main, "ADAPTERS", FakeAdapters(prometheus_client=prometheus))
    assert main(["run", "--check", "--config", str(config)]) == 0
    assert "config ok" in capsys.readouterr().out


def test_replay_table_runs_a_right_sized_table_as_ecoscale_packed(planned, tmp_path, capsys):
    from ecoscale.replay.policies import all_policies
    from ecoscale.replay.scenario import ReplayOptions, build_scenario

    path, _ = planned
    assert main(["replay", "--table", str(path), "--duration", "2h", "--no-plots", "--json",
                 "--policies", "all-new,ecoscale,ecoscale-packed",
                 "--out", str(tmp_path / "r")]) == 0
    document = json.loads(capsys.readouterr().out)
    rows = {row["policy"]: row for row in document["rows"]}
    assert rows["ecoscale-packed"]["carbon_kg"] < rows["ecoscale"]["carbon_kg"]
    table = load_table(path)
    scenario = build_scenario(ReplayOptions(duration="2h"))
    ecoscale, packed = all_policies(scenario, table, names=("ecoscale", "ecoscale-packed"))
    # the file's packing as it is (not right-sized again), and ecoscale on dedicated slots
    assert [lv.placement for lv in packed.inner.table.levels] == [
        lv.placement for lv in table.levels]
    assert not ecoscale.table.right_sized
    assert [lv.placement.items for lv in ecoscale.table.levels] == [
        lv.placement.items for lv in table.levels]
