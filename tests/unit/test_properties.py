"""Property-based tests of every loader and every CLI entry point (hypothesis).

For generated bad inputs the result is a clear error (an ecoscale error, or exit code
non-zero with a message and no traceback) within a time bound (the deadline), and never a
computed result from non-finite data: whatever a loader accepts holds finite numbers only.
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecoscale.adapters.files import decode_text, parse_hardware, parse_profile, parse_yaml_text
from ecoscale.adapters.tracefiles import load_carbon_trace, load_load_trace
from ecoscale.cli import build_parser, main
from ecoscale.config import parse_config
from ecoscale.errors import EcoscaleError, InputError
from ecoscale.model.topology import parse_topology
from ecoscale.planner.table import table_from_data
from ecoscale.profiler.experiments import parse_pool
from ecoscale.values import BadNumber, flag, number, parse_number_text

BASE = Path(__file__).resolve().parents[1] / "fixtures" / "bad" / "base"
_COMMON = {"derandomize": True, "database": None,   # the same examples on every run (CI)
           "suppress_health_check": [HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow]}
FAST = settings(max_examples=100, deadline=2000, **_COMMON)
"""Loaders and parsers: 100 examples, each within 2 s."""
SLOW = settings(max_examples=40, deadline=10_000, **_COMMON)
"""Whole command lines: 40 examples, each within 10 s."""

BAD_NUMBERS = st.one_of(
    st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.booleans(),
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    st.just(1e300), st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2),
)
ANY_VALUE = st.one_of(BAD_NUMBERS, st.floats(), st.integers(), st.text(max_size=5))
NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "+inf", "1e309", "-0", "0", "1e-320",
                     "0x10", "1_000", " 3 ", "", "--1", "1e9", "-5", "true"]),
    st.floats().map(repr), st.text(max_size=10),
)


def _base(name: str) -> Any:
    return yaml.safe_load((BASE / name).read_text(encoding="utf-8"))


def _numbers_in(data: Any) -> list[float]:
    """Every float/int held by a (nested) dataclass, mapping, sequence or array."""
    if isinstance(data, bool):
        return []
    if isinstance(data, int | float):
        return [float(data)]
    if isinstance(data, np.ndarray):
        return [float(x) for x in data.ravel()]
    if isinstance(data, dict):
        return [x for v in data.values() for x in _numbers_in(v)]
    if isinstance(data, list | tuple):
        return [x for v in data for x in _numbers_in(v)]
    if hasattr(data, "__dataclass_fields__"):
        return [x for name in data.__dataclass_fields__ for x in
                _numbers_in(getattr(data, name))]
    if hasattr(data, "items") and callable(data.items):
        return [x for _, v in data.items() for x in _numbers_in(v)]
    return []


def _set_path(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    changed = copy.deepcopy(data)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


# ---- values ----------------------------------------------------------------------------
@FAST
@given(value=ANY_VALUE, low=st.one_of(st.none(), st.floats(-10, 10)))
def test_number_is_finite_in_range_or_refused(value, low):
    try:
        result = number(value, "field", minimum=low)
    except BadNumber as exc:
        assert str(exc).startswith("field ")
        return
    assert math.isfinite(result) and not isinstance(value, bool)
    assert low is None or result >= low


@FAST
@given(text=NUMBER_TEXT)
def test_number_text_and_flags_never_pass_non_finite(text):
    try:
        result = parse_number_text(text, "--x", above=0)
    except BadNumber:
        result = None
    if result is not None:
        assert math.isfinite(result) and result > 0
    try:
        parsed = flag("--x", above=0)(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc)
        assert result is None
    else:
        assert parsed == result


# ---- YAML and text -----------------------------------------------------------------------
@FAST
@given(data=st.binary(max_size=300))
def test_any_bytes_are_text_or_a_clear_error(data):
    try:
        decode_text(data, "f.yaml")
    except InputError as exc:
        assert "f.yaml" in str(exc)


@FAST
@given(text=st.one_of(
    st.text(max_size=200),
    st.text(alphabet="[]{}-:*&! ,\n\tab1", max_size=400),
    st.integers(1, 20).map(lambda n: "a: &a [1]\n" + "".join(
        f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}]\n"
        for i in range(n))),
    st.integers(60, 5000).map(lambda n: "x: " + "[" * n + "]" * n),
    st.integers(60, 5000).map(lambda n: "x:\n" + "- " * n + "1"),
))
def test_yaml_text_is_data_or_a_clear_error(text):
    try:
        parse_yaml_text(text, "f.yaml")
    except InputError as exc:
        assert str(exc).startswith("f.yaml: ")


# ---- file parsers: one bad number anywhere is refused, naming the field ---------------------
HARDWARE_FIELDS = [("pue",), ("reference", "carbon_intensity_g_per_kwh"),
                   ("reference", "utilisation")] + [
    ("generations", g, key) for g in ("new", "old")
    for key in ("slots_per_node", "embodied_kg_per_node", "lifetime_years", "idle_w_per_slot",
                "peak_w_per_slot")]


@FAST
@given(path=st.sampled_from(HARDWARE_FIELDS), value=BAD_NUMBERS)
def test_hardware_with_a_bad_number_is_refused(path, value):
    data = _set_path(_base("hardware.yaml"), path, value)
    if value is None and path[-1] in ("pue", "carbon_intensity_g_per_kwh", "utilisation"):
        return   # absent: the documented default applies
    with pytest.raises(InputError, match=path[-1]):
        parse_hardware(data, "hw.yaml")


@FAST
@given(path=st.sampled_from(HARDWARE_FIELDS), value=ANY_VALUE)
def test_accepted_hardware_is_finite(path, value):
    data = _set_path(_base("hardware.yaml"), path, value)
    try:
        hardware = parse_hardware(data, "hw.yaml")
    except InputError:
        return
    assert all(math.isfinite(x) for x in _numbers_in(hardware))


@FAST
@given(service=st.sampled_from(["fe", "cache", "db"]), generation=st.sampled_from(["new", "old"]),
       row=st.integers(0, 2), column=st.integers(0, 2), value=ANY_VALUE)
def test_accepted_profile_is_finite_and_monotone(service, generation, row, column, value):
    data = _base("profile.yaml")
    data["services"][service][generation]["points"][row][column] = value
    try:
        profile = parse_profile(data, "p.yaml")
    except InputError as exc:
        assert f"services.{service}.{generation}" in str(exc)
        return
    for per_generation in profile.curves.values():
        for curve in per_generation.values():
            assert np.all(np.isfinite(curve.p99_ms)) and np.all(np.diff(curve.p99_ms) >= 0)
            assert math.isfinite(curve.saturation_qps)


@FAST
@given(endpoint=st.sampled_from(["read", "write"]), value=ANY_VALUE)
def test_accepted_topology_has_finite_shares(endpoint, value):
    data = _base("topology.yaml")
    data["endpoints"][endpoint]["share"] = value
    try:
        topology = parse_topology(data, "t.yaml")
    except InputError:
        return
    assert all(math.isfinite(e.share) and 0 <= e.share <= 1 for e in topology.endpoints)


TABLE_FIELDS = [("slo_ms",), ("peak_qps",), ("hysteresis", "up_fraction"),
                ("hysteresis", "down_stabilisation_s"), ("levels", 0, "max_load_qps"),
                ("levels", 1, "max_ci_g_per_kwh"),
                ("levels", 0, "placement", "db", "replicas"),
                ("levels", 1, "placement", "fe", "replicas"), ("carbon_ratio_C", "old")]


@FAST
@given(path=st.sampled_from(TABLE_FIELDS), value=ANY_VALUE)
def test_accepted_table_is_finite_and_whole(path, value):
    data = _set_path(_base("table.yaml"), path, value)
    try:
        table = table_from_data(data, "table.yaml")
    except InputError:
        return
    assert math.isfinite(table.slo_ms) and table.slo_ms > 0
    for level in table.levels:
        assert math.isfinite(level.max_load_qps) and level.max_load_qps > 0
        assert all(isinstance(p.replicas, int) and 1 <= p.replicas <= 10_000
                   for _, p in level.placement.items)


CONFIG_FIELDS = [("interval_s",), ("max_backoff_s",), ("listen_port",), ("dry_run",),
                 ("prometheus", "timeout_s"), ("prometheus", "stale_after_s"),
                 ("carbon", "speedup"), ("carbon", "fallback_g_per_kwh"),
                 ("control", "slo_miss_periods"), ("control", "cooldown_s"),
                 ("control", "max_replicas")]


@FAST
@given(path=st.sampled_from(CONFIG_FIELDS), value=ANY_VALUE)
def test_accepted_daemon_config_is_finite(path, value):
    raw = _base("daemon.yaml")
    raw.setdefault("carbon", {})
    data = _set_path(raw, path, value)
    try:
        config = parse_config(data, "d.yaml")
    except InputError:
        return
    assert config.interval_s >= 0.1
    assert all(math.isfinite(x) for x in _numbers_in(config))
    assert isinstance(config.dry_run, bool)


POOL_FIELDS = [("warmup_s",), ("measure_s",), ("loads_qps", 1), ("slot_cpus", "old"),
               ("seed",)]


@FAST
@given(path=st.sampled_from(POOL_FIELDS), value=ANY_VALUE)
def test_accepted_pool_is_finite(path, value):
    data = _set_path(_base("pool.yaml"), path, value)
    try:
        pool = parse_pool(data, "pool.yaml")
    except InputError:
        return
    assert all(math.isfinite(x) for x in _numbers_in(pool))


# ---- trace loaders ---------------------------------------------------------------------
CELL = st.one_of(st.sampled_from(["", "nan", "inf", "-inf", "-1", "1e6", "0", "x", "1e400"]),
                 st.floats(0, 1000).map(lambda x: f"{x:.3f}"))
TIME = st.sampled_from(["2022-01-01 0{}:00:00", "2022-01-01T0{}:00:00Z",
                        "2022-01-01T0{}:00:00+01:00", "0{}", "bad{}"])


@SLOW
@given(cells=st.lists(CELL, min_size=0, max_size=8), times=st.lists(TIME, min_size=8,
                                                                   max_size=8),
       delimiter=st.sampled_from([",", ";", "\t"]), kind=st.sampled_from(["load", "carbon"]))
def test_trace_loaders_refuse_or_return_finite(cells, times, delimiter, kind):
    header = "time" + delimiter + ("qps" if kind == "load" else "ci")
    rows = [f"{times[i].format(i)}{delimiter}{cell}" for i, cell in enumerate(cells)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.csv"
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        try:
            trace = (load_load_trace if kind == "load" else load_carbon_trace)(str(path))
        except InputError as exc:
            assert str(path) in str(exc)
            return
    assert np.all(np.isfinite(trace.values)) and np.all(trace.values >= 0)
    assert kind == "carbon" or trace.values.max() > 0


# ---- CLI entry points --------------------------------------------------------------------
TOY = ["--app", str(BASE / "topology.yaml"), "--profile", str(BASE / "profile.yaml"),
       "--hardware", str(BASE / "hardware.yaml")]
REPLAY_TOY = ["replay", *TOY, "--load-trace", str(BASE / "load.csv"), "--carbon-trace",
              str(BASE / "carbon.csv"), "--step", "10m", "--no-plots", "--policies", "all-new"]


def _run(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


@SLOW
@given(name=st.sampled_from(["--peak-qps", "--slo-ms", "--prune-threshold", "--headroom",
                             "--levels", "--ci-bands"]), text=NUMBER_TEXT)
def test_plan_flags_refuse_or_plan_finite(name, text, capsys, tmp_path):
    out_file = tmp_path / "t.yaml"
    code, out, err = _run(["plan", *TOY, "--levels", "0.5,1", f"{name}={text}",
                           "--out", str(out_file)], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert err.strip()
        return
    table = yaml.safe_load(out_file.read_text())
    assert math.isfinite(table["slo_ms"]) and math.isfinite(table["peak_qps"])
    assert all(math.isfinite(level["max_load_qps"]) for level in table["levels"])


@SLOW
@given(name=st.sampled_from(["--peak-qps", "--slo-ms"]), text=NUMBER_TEXT)
def test_replay_number_flags_refuse_or_replay_finite(name, text, capsys, tmp_path):
    code, out, err = _run([*REPLAY_TOY, f"{name}={text}", "--out", str(tmp_path)], capsys)
    assert "Traceback" not in err
    if code != 0:
        assert code == 2 and "error:" in err
        return
    assert "nan" not in out.lower().split("where the numbers come from")[0]


@SLOW
@given(step=st.one_of(st.sampled_from(["0.001s", "0s", "0.5s", "1s", "1m", "1e3s", "-1m",
                                       "5 m", "1h", "2d", "nan", ""]),
                      st.text(max_size=6)),
       duration=st.one_of(st.none(), st.sampled_from(["1h", "6h", "0s", "1000000000s",
                                                      "10000w", "x"])))
def test_replay_step_and_duration_refuse_or_replay(step, duration, capsys, tmp_path):
    argv = [*REPLAY_TOY, f"--step={step}", "--out", str(tmp_path)]
    if duration is not None:
        argv.append(f"--duration={duration}")
    code, out, err = _run(argv, capsys)
    assert "Traceback" not in err
    if code != 0:
        assert "error:" in err
        return
    assert "nan" not in out.lower().split("where the numbers come from")[0]


LAB_FLAGS = [("up", "--new-nodes"), ("up", "--old-nodes"), ("up", "--old-cpu-factor"),
             ("up", "--old-node-cpus"), ("load", "--rate"), ("load", "--duration"),
             ("load", "--steps"), ("load", "--step-s"), ("load", "--seed"),
             ("load", "--timeout"), ("evaluate", "--minutes"), ("evaluate", "--period-s"),
             ("evaluate", "--peak-fraction"), ("evaluate", "--headroom"),
             ("evaluate", "--move-time"), ("evaluate", "--trend-periods"),
             ("colocation", "--warmup-s"), ("colocation", "--measure-s")]


@FAST
@given(where=st.sampled_from(LAB_FLAGS), text=NUMBER_TEXT)
def test_lab_flags_parse_finite_or_are_usage_errors(where, text, capsys):
    command, name = where
    try:   # parse only: nothing of the lab ever runs here
        args = build_parser().parse_args(["lab", command, f"{name}={text}"])
    except SystemExit as exc:
        assert exc.code == 2
        assert "error: argument" in capsys.readouterr().err
        return
    value = getattr(args, name.lstrip("-").replace("-", "_"))
    assert math.isfinite(value)


@SLOW
@given(path=st.sampled_from(CONFIG_FIELDS), value=BAD_NUMBERS)
def test_run_check_refuses_a_bad_config_number(path, value, capsys, tmp_path, monkeypatch):
    raw = yaml.safe_load((BASE / "daemon.yaml").read_text().replace("{dir}", str(tmp_path)))
    if value is None or (path == ("dry_run",) and isinstance(value, bool)):
        return   # absent: the default applies; a boolean dry_run is right
    if path == ("carbon", "fallback_g_per_kwh") and value == 1e300:
        return   # a huge fallback is odd but finite
    for name in ("topology.yaml", "profile.yaml", "hardware.yaml", "table.yaml"):
        (tmp_path / name).write_text((BASE / name).read_text())
    (tmp_path / "toy").write_text((BASE / "topology.yaml").read_text())
    monkeypatch.chdir(tmp_path)   # the config's app 'toy' is the file ./toy
    (tmp_path / "daemon.yaml").write_text(yaml.safe_dump(_set_path(raw, path, value)))
    code, _, err = _run(["run", "--check", "--config", str(tmp_path / "daemon.yaml")], capsys)
    assert code != 0 and "Traceback" not in err
    assert path[-1] in err


@SLOW
@given(loads=st.one_of(NUMBER_TEXT, st.lists(NUMBER_TEXT, min_size=1, max_size=4).map(",".join)),
       warmup=st.one_of(st.none(), NUMBER_TEXT))
def test_profile_flags_refuse_or_plan_finite_loads(loads, warmup, capsys, tmp_path):
    pool = (BASE / "pool.yaml").read_text().replace("{dir}", str(BASE))
    (tmp_path / "pool.yaml").write_text(pool)
    argv = ["profile", "--app", str(BASE / "topology.yaml"), "--pool",
            str(tmp_path / "pool.yaml"), "--dry-run", f"--loads={loads}"]
    if warmup is not None:
        argv.append(f"--warmup-s={warmup}")
    code, out, err = _run(argv, capsys)
    assert "Traceback" not in err
    if code != 0:
        assert "error" in err
        return
    assert "nan" not in out.lower() and "inf " not in out.lower()


def test_every_loader_and_entry_point_has_a_property():
    """The loaders and commands above; a new loader needs its own property here."""
    covered = {parse_hardware, parse_profile, parse_topology, table_from_data, parse_config,
               parse_pool, load_load_trace, load_carbon_trace, parse_yaml_text, decode_text}
    assert len(covered) == 10
    assert {"plan", "replay", "run", "profile", "lab"} <= set(
        build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert issubclass(InputError, EcoscaleError)
