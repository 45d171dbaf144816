import pytest

from ecoscale.adapters.files import load_config
from ecoscale.cli import main
from ecoscale.config import parse_config
from ecoscale.errors import InputError

GOOD = {
    "app": "socialNetwork", "table": "t.yaml",
    "prometheus": {"url": "http://127.0.0.1:9090", "qps": "sum(rate(x[1m]))",
                   "p99_ms": "1000 * histogram_quantile(0.99, y)"},
}


def test_the_shipped_example_config_is_valid():
    config = load_config("deploy/daemon/ecoscale.yaml")
    assert config.app == "socialNetwork" and config.interval_s == 15
    assert config.table.endswith("policy-table.yaml")
    assert config.listen_address == "127.0.0.1"


def test_defaults():
    config = parse_config(GOOD, "c.yaml")
    assert config.control.no_data_fallback_periods == 10
    assert config.labels.managed == "ecoscale.managed" and not config.dry_run


@pytest.mark.parametrize("value,expected", [(None, 0), (3, 3), (101, "control.trend_periods "
                                                                  "must be in 0..100"),
                                           (1.5, "control.trend_periods must be a whole number")],
                         ids=["default-off", "three-periods", "too-long", "not-whole"])
def test_the_trend_estimate_is_a_control_setting_off_by_default(value, expected):
    raw = dict(GOOD, control={} if value is None else {"trend_periods": value})
    if isinstance(expected, int):
        assert parse_config(raw, "c.yaml").control.trend_periods == expected
        return
    with pytest.raises(InputError) as info:
        parse_config(raw, "c.yaml")
    assert expected in str(info.value)


def test_every_problem_is_reported_at_once():
    bad = {
        "app": "", "intervall_s": 5, "interval_s": -1, "dry_run": "yes",
        "prometheus": {"url": "localhost:9090", "qps": "", "timeout_s": 0},
        "carbon": {"speedup": 0},
        "control": {"slo_miss_periods": 0, "min_replicas": 3, "max_replicas": 1},
    }
    with pytest.raises(InputError) as info:
        parse_config(bad, "bad.yaml")
    text = str(info.value)
    for fragment in ("app: required", "table: required", "intervall_s: unknown setting",
                     "did you mean interval_s", "interval_s must be > 0",
                     "dry_run: expected true or false", "must start with http://",
                     "prometheus.qps: required", "prometheus.p99_ms: required",
                     "timeout_s and stale_after_s must be > 0", "carbon.speedup must be > 0",
                     "control.slo_miss_periods must be >= 1",
                     "control.need 1 <= min_replicas <= max_replicas"):
        assert fragment in text, fragment
    assert len(info.value.problems) >= 12


def test_bad_config_is_a_clear_error_and_nonzero_exit(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("app: socialNetwork\nprometheus: {url: nope}\n")
    code = main(["run", "--config", str(path)])
    assert code == 1   # a bad file is a runtime error; 2 is for a bad command line
    err = capsys.readouterr().err
    assert "c.yaml" in err and "table: required" in err and "must start with http" in err


def test_missing_table_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("app: socialNetwork\ntable: nowhere.yaml\nprometheus: {qps: a, p99_ms: b}\n")
    assert main(["run", "--check", "--config", str(path)]) == 1
    assert "nowhere.yaml" in capsys.readouterr().err


def test_check_accepts_a_planned_table(tmp_path, capsys, monkeypatch):
    from ecoscale.daemon import main as daemon_main
    from ecoscale.testing import FakeAdapters, RecordedPrometheus, vector_reply

    table = tmp_path / "policy-table.yaml"
    assert main(["plan", "--out", str(table), "--levels", "0.5,1.0"]) == 0
    path = tmp_path / "c.yaml"
    path.write_text("app: socialNetwork\ntable: policy-table.yaml\n"
                    "prometheus: {qps: a, p99_ms: b}\n")
    prometheus = RecordedPrometheus({q: vector_reply(({}, 1.0, 1.0)) for q in ("a", "b")})
    monkeypatch.setattr(daemon_main, "ADAPTERS", FakeAdapters(prometheus_client=prometheus))
    assert main(["run", "--check", "--config", str(path)]) == 0
    assert "config ok" in capsys.readouterr().out


@pytest.mark.parametrize("value, expected", [
    ({"new": 16, "old": 10}, {"new": 16.0, "old": 10.0}),
    (None, {}),
    ({"new": 0}, "slot_cpus.new must be a number > 0"),
    ({"old": "ten"}, "slot_cpus.old must be a number"),
    ([16, 10], "slot_cpus: expected a mapping of generation -> CPUs of one slot"),
], ids=["two-generations", "unset", "zero", "not-a-number", "not-a-mapping"])
def test_slot_cpus_are_cores_per_generation(value, expected):
    raw = dict(GOOD, **({} if value is None else {"slot_cpus": value}))
    if isinstance(expected, dict):
        assert parse_config(raw, "c.yaml").slot_cpus == expected
        return
    with pytest.raises(InputError) as info:
        parse_config(raw, "c.yaml")
    assert "c.yaml" in str(info.value) and expected in str(info.value)


@pytest.fixture(scope="module")
def right_sized_table_file(tmp_path_factory):
    from ecoscale.adapters.files import load_hardware, load_profile, load_topology, write_table
    from ecoscale.model.app import AppModel, default_slo
    from ecoscale.planner.table import build_table

    model = AppModel(load_topology("socialNetwork"), load_profile("socialNetwork", "calibrated"),
                     load_hardware())
    slo, peak, _ = default_slo(model)
    table = build_table(model, slo, peak, fractions=(0.5,), right_size=True)
    assert all(level.right_sized for level in table.levels)
    path = tmp_path_factory.mktemp("sized") / "policy-table.yaml"
    write_table(path, table)
    return path, sorted({p.generation for level in table.levels
                         for _, p in level.placement.items})


def test_a_right_sized_table_needs_the_cpus_of_a_slot_of_each_generation(right_sized_table_file):
    from ecoscale.daemon.main import load_all

    table, generations = right_sized_table_file
    path = table.parent / "c.yaml"
    path.write_text(f"app: socialNetwork\ntable: {table.name}\nprofile: calibrated\n"
                    "prometheus: {qps: a, p99_ms: b}\nslot_cpus: {new: 16}\n")
    with pytest.raises(InputError) as info:
        load_all(str(path))
    text = str(info.value)
    assert str(path) in text
    assert generations == ["old"]   # half the peak: every service on old, packed
    assert "slot_cpus.old: required" in text and "slot_cpus.new" not in text
    path.write_text(path.read_text().replace("{new: 16}", "{new: 16, old: 10}"))
    config, loaded, _ = load_all(str(path))
    assert config.slot_cpus == {"new": 16.0, "old": 10.0} and loaded.levels[0].right_sized
