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
