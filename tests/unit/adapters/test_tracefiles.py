import numpy as np
import pytest

from ecoscale.adapters.tracefiles import load_carbon_trace, load_load_trace
from ecoscale.errors import InputError


@pytest.mark.parametrize("name,steps,step_s", [
    ("worldcup98", 4320, 60.0), ("google2011", 8760, 3600.0),
])
def test_shipped_load_traces(name, steps, step_s):
    trace = load_load_trace(name)
    assert len(trace.values) == steps and trace.step_s == step_s
    assert np.all(trace.values >= 0)


@pytest.mark.parametrize("name,mean", [("CISO", 257.5), ("ERCO", 347.6)])
def test_shipped_carbon_traces(name, mean):
    trace = load_carbon_trace(name)
    assert len(trace.values) == 8760 and trace.unit == "gCO2e/kWh"
    assert np.all(np.isfinite(trace.values))
    assert float(np.mean(trace.values)) == pytest.approx(mean, abs=0.5)
    assert any("IPCC AR5" in note for note in trace.notes)


def test_ciso_gaps_are_filled_and_named():
    trace = load_carbon_trace("CISO")
    filled = [n for n in trace.notes if "filled" in n]
    assert filled and "line 108" in filled[0] and "2022-05-17 18:00" in filled[0]


GOOD = "time,rate\n2024-01-01 00:00,10\n2024-01-01 00:01,12\n2024-01-01 00:02,11\n"


@pytest.mark.parametrize("text,kwargs,fragments", [
    pytest.param("", {}, ["is empty"], id="empty-file"),
    pytest.param("time,rate\n", {}, ["empty"], id="header-only"),
    pytest.param(GOOD, {"value_column": "qps"}, ["no column 'qps'", "--load-column"],
                 id="missing-column"),
    pytest.param("time,a,b\n2024-01-01 00:00,1,2\n2024-01-01 00:01,1,2\n", {},
                 ["cannot tell which column", "--load-column"], id="ambiguous-column"),
    pytest.param("time,rate\n2024-01-01 00:01,10\n2024-01-01 00:00,12\n", {},
                 ["line 3", "not after the previous line", "sort the file"],
                 id="non-monotonic-time"),
    pytest.param("time,rate\n2024-01-01 00:00,10\n2024-01-01 00:01,-3\n", {},
                 ["line 3", "negative"], id="negative-value"),
    pytest.param("time,rate\n2024-01-01 00:00,10\n2024-01-01 00:01,\n2024-01-01 00:02,4\n", {},
                 ["line 3", "missing or NaN", "fill in"], id="nan-value"),
    pytest.param("time,rate\n2024-01-01 00:00,10\n2024-01-01 00:01,NaN\n", {},
                 ["line 3", "NaN"], id="literal-nan"),
    pytest.param(GOOD, {"timezone": "Mars/Olympus"}, ["time zone 'Mars/Olympus' is unknown",
                                                      "IANA"], id="unknown-time-zone"),
    pytest.param("time,rate\nyesterday,1\n2024-01-01 00:01,2\n", {},
                 ["line 2", "not a time"], id="bad-time"),
    pytest.param("time,rate\n2024-01-01 00:00,1\n2024-01-01 00:01,2\n2024-01-01 00:05,2\n", {},
                 ["line 4", "missing lines"], id="irregular-step"),
    pytest.param("time,rate\n2024-01-01 00:00,1\n2024-01-01 00:01,lots\n", {},
                 ["line 3", "not a number"], id="text-value"),
])
def test_load_trace_errors_name_file_line_and_fix(tmp_path, text, kwargs, fragments):
    path = tmp_path / "my-trace.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_load_trace(str(path), **kwargs)
    message = str(info.value)
    assert "my-trace.csv" in message
    for fragment in fragments:
        assert fragment in message


def test_a_good_user_trace_loads_in_its_zone(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text(GOOD)
    trace = load_load_trace(str(path), timezone="Europe/Paris")
    assert trace.values.tolist() == [10, 12, 11] and trace.step_s == 60
    assert trace.start == "2023-12-31T23:00:00+00:00"


def test_unknown_trace_name_lists_the_shipped_ones():
    with pytest.raises(InputError, match="worldcup98"):
        load_load_trace("no-such-trace")


def test_carbon_trace_with_ready_intensity_column(tmp_path):
    path = tmp_path / "ci.csv"
    path.write_text("timestamp,carbon_intensity_g_per_kwh\n2022-01-01T00:00Z,100\n"
                    "2022-01-01T01:00Z,200\n")
    trace = load_carbon_trace(str(path))
    assert trace.values.tolist() == [100, 200]


def test_carbon_trace_long_gap_is_rejected(tmp_path):
    rows = ["timestamp,COL,WND"] + [
        f"2022-01-01 {h:02d}:00,{'' if 2 <= h <= 6 else 1},{'' if 2 <= h <= 6 else 1}"
        for h in range(10)
    ]
    path = tmp_path / "gappy.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"lines 4\.\.8: 5 rows"):
        load_carbon_trace(str(path))


def test_carbon_trace_unknown_fuel(tmp_path):
    path = tmp_path / "fuel.csv"
    path.write_text("timestamp,COL,UNOBTAINIUM\n2022-01-01 00:00,1,1\n2022-01-01 01:00,1,1\n")
    with pytest.raises(InputError, match="UNOBTAINIUM.*--carbon-factors"):
        load_carbon_trace(str(path))


def test_custom_carbon_factors(tmp_path):
    factors = tmp_path / "f.yaml"
    factors.write_text("name: flat\nfactors_g_per_kwh: {COL: 100, WND: 100, SUN: 100, WAT: 100,"
                       " OIL: 100, NG: 100, NUC: 100, OTH: 100}\n")
    trace = load_carbon_trace("ERCO", factors_path=str(factors))
    assert np.allclose(trace.values, 100.0)
    assert any("flat" in n for n in trace.notes)


@pytest.mark.parametrize("cells,expected", [
    (["100", "", "300", "400"], [100, 200, 300, 400]),
    (["100", "", "", "", "500"], [100, 200, 300, 400, 500]),
    (["100", "nan", "300"], [100, 200, 300]),
], ids=["one-hour", "three-hours", "nan-text"])
def test_intensity_column_gaps_up_to_three_steps_are_interpolated(tmp_path, cells, expected):
    rows = [f"2022-01-01 {i:02d}:00:00,{cell}" for i, cell in enumerate(cells)]
    path = tmp_path / "ci.csv"
    path.write_text("\n".join(["time,carbon_intensity_g_per_kwh", *rows]) + "\n")
    trace = load_carbon_trace(str(path))
    assert trace.values.tolist() == pytest.approx(expected)
    assert any("filled by linear interpolation" in note for note in trace.notes)


@pytest.mark.parametrize("times,zone,expected_s", [
    (["2022-01-01T00:00:00Z", "2022-01-01T02:00:00+01:00", "2022-01-01T02:00:00Z"], None,
     [0, 3600, 7200]),
    (["2022-01-01 00:00:00", "2022-01-01 01:00:00", "2022-01-01 02:00:00"],
     "America/Los_Angeles", [0, 3600, 7200]),
], ids=["offsets-converted-to-utc", "naive-in-a-zone"])
def test_times_with_offsets_or_a_zone(tmp_path, times, zone, expected_s):
    path = tmp_path / "load.csv"
    path.write_text("time,qps\n" + "".join(f"{t},{i + 1}\n" for i, t in enumerate(times)))
    trace = load_load_trace(str(path), timezone=zone)
    assert trace.step_s == 3600 and len(trace.values) == len(expected_s)
    assert trace.start is not None and trace.start.endswith("+00:00")
