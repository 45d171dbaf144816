"""The `ecoscale` command's conventions: help text vs behaviour, exit codes, --json/--quiet,
--out checks and atomic writes, durations with units, plan warnings and the refit guard."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ecoscale.adapters import outputs
from ecoscale.adapters.files import DEFAULT_PROFILE, write_yaml
from ecoscale.cli import build_parser, main
from ecoscale.errors import UsageError
from ecoscale.model.trace import DURATION_HINT, parse_duration_s
from ecoscale.paths import profiles_dir
from ecoscale.planner.report import MEETS_SLO_NOT_HEADROOM, MISSES_SLO
from ecoscale.replay.engine import SUMMARY_COLUMNS
from ecoscale.replay.policies import POLICY_NAMES
from ecoscale.replay.report import OUTPUT_NAMES

QUICK = ["--duration", "2h", "--no-plots"]
"""A replay that takes about a second."""


def _subparsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, parser) of every command and subcommand, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _subparsers(child, (*prefix, name))


def _help(*words: str) -> str:
    parser = dict(_subparsers(build_parser()))[tuple(words)]
    return parser.format_help()


def _json_out(capsys) -> dict:
    captured = capsys.readouterr()
    return json.loads(captured.out)   # fails if anything but JSON is on stdout


# --- the default profile, said the same everywhere -------------------------------------

def test_replay_and_plan_default_to_the_calibrated_profile_as_their_help_says(tmp_path, capsys):
    assert DEFAULT_PROFILE == "calibrated"
    for command in ("replay", "plan"):
        text = " ".join(_help(command).split())
        assert "(default: calibrated)" in text, command
        assert "'lab' (measured on `ecoscale lab`)" in text, command
    assert main(["replay", *QUICK, "--policies", "all-new", "--json",
                 "--out", str(tmp_path / "r")]) == 0
    assert _json_out(capsys)["profile"] == "calibrated"
    assert main(["plan", "--json", "--levels", "1.0", "--out", str(tmp_path / "t.yaml")]) == 0
    assert _json_out(capsys)["profile"] == "calibrated"


def test_the_lab_profile_is_one_flag_away_and_the_lab_commands_default(tmp_path, capsys):
    assert main(["replay", *QUICK, "--profile", "lab", "--policies", "all-new", "--json",
                 "--out", str(tmp_path / "r")]) == 0
    assert _json_out(capsys)["profile"] == "lab"
    assert build_parser().parse_args(["lab", "evaluate"]).profile == "lab"


def test_the_daemon_config_sample_names_the_default_profile():
    sample = yaml.safe_load((profiles_dir().parent / "deploy/daemon/ecoscale.yaml").read_text())
    assert sample["profile"] == DEFAULT_PROFILE


# --- exit codes ---------------------------------------------------------------------

def test_every_command_documents_the_exit_codes():
    for words, parser in _subparsers(build_parser()):
        text = parser.format_help()
        assert "exit codes:" in text, words
        for code in ("0  success", "1  runtime error", "2  usage error"):
            assert code in text, (words, code)


@pytest.mark.parametrize("args,code,fragment", [
    pytest.param(["replay", "--no-such-flag"], 2, "unrecognized arguments", id="unknown-flag"),
    pytest.param(["replay", "--step", "fast"], 2, "not a duration", id="bad-duration"),
    pytest.param(["replay", "--policies", "magic"], 2, "unknown policies magic",
                 id="unknown-policy"),
    pytest.param(["replay", "--slo-ms", "0"], 2, "argument --slo-ms: must be a number > 0",
                 id="zero-slo"),
    pytest.param(["replay", "--start", "1999-01-01"], 1,
                 "covers 1998-06-30 00:00 .. 07-02 23:59 UTC", id="window-outside-trace"),
    pytest.param(["replay", "--load-trace", "no/such.csv"], 1, "no/such.csv",
                 id="file-not-found"),
    pytest.param(["plan", "--profile", "nope"], 1, "file not found", id="no-profile"),
    pytest.param(["plan", "--headroom", "1.5"], 2,
                 "argument --headroom: must be a number >= 0 and < 1", id="bad-headroom"),
    pytest.param(["lab", "load", "--duration", "soon"], 2, "not a duration",
                 id="lab-load-duration"),
    pytest.param(["lab", "load", "--rate", "5"], 2, "--rate needs --duration",
                 id="lab-load-rate-alone"),
    pytest.param(["lab", "load", "--trace", "worldcup98", "--peak-qps", "9", "--trace-start",
                  "5d"], 1, "from 1998-07-05 00:00 lies outside the trace, which covers "
                  "1998-06-30 00:00 .. 07-02 23:59 UTC", id="lab-load-window-outside"),
    pytest.param(["lab", "evaluate", "--policies", "magic"], 2, "unknown policies magic",
                 id="lab-evaluate-policy"),
    pytest.param(["lab", "colocation", "--services", "home-timeline-service"], 2,
                 "--services: name at least two services", id="lab-colocation-one-service"),
    pytest.param(["lab", "colocation", "--services", "home-timeline-service,nope"], 2,
                 "nope: not a service of socialNetwork; choose from", id="lab-colocation-unknown"),
    pytest.param(["lab", "colocation", "--loads", "70,40"], 2,
                 "--loads: at least two distinct loads in ascending order",
                 id="lab-colocation-loads-order"),
    pytest.param(["lab", "colocation", "--loads", "40,fast"], 2, "e.g. 40,70,100",
                 id="lab-colocation-loads-text"),
    pytest.param(["lab", "colocation", "--measure-s", "10s"], 2, "must be >= 15 s",
                 id="lab-colocation-short-window"),
])
def test_exit_codes(tmp_path, capsys, args, code, fragment):
    """0 ok, 1 a runtime error (EcoscaleError), 2 a usage error (argparse, UsageError)."""
    try:
        got = main([*args, "--out", str(tmp_path / "out")] if args[0] != "lab" else args)
    except SystemExit as exc:     # argparse exits by itself
        got = exc.code
    assert got == code
    assert fragment in capsys.readouterr().err


def test_a_usage_error_points_at_the_help(tmp_path, capsys):
    assert main(["replay", "--policies", "magic", "--out", str(tmp_path)]) == 2
    assert "ecoscale replay --help" in capsys.readouterr().err


# --- --json and --quiet -------------------------------------------------------------

REPLAY_SCHEMA = {
    "app": str, "profile": str, "steps": int, "step_s": float, "slo_ms": float,
    "reference": str, "rows": list, "provenance": dict, "out": str, "files": list,
}
ROW_SCHEMA = {**{name: float for name in SUMMARY_COLUMNS}, "policy": str, "moves": int,
              "slo_violation_min": float}
PLAN_SCHEMA = {
    "app": str, "profile": str, "slo_ms": float, "planned_to_p99_ms": float,
    "peak_qps": float, "search": dict, "non_critical": dict, "ranking": list,
    "levels": list, "warnings": list, "out": str,
}
LEVEL_SCHEMA = {
    "max_load_qps": float, "max_ci_g_per_kwh": (float, type(None)), "feasible": bool,
    "status": str, "within_peak": bool, "p99_ms": float, "carbon_g_per_h": float,
    "on_new": int, "slots": int, "placement": dict,
}


def _check(document: dict, schema: dict, where: str) -> None:
    """A small JSON schema check: every key present with a value of its type."""
    for key, kind in schema.items():
        assert key in document, f"{where}: {key} missing"
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds:
            kinds = (*kinds, int)
        assert isinstance(document[key], kinds) and not (
            isinstance(document[key], bool) and bool not in kinds), (where, key, document[key])


def test_replay_json_is_the_summary_rows_and_nothing_else(tmp_path, capsys):
    assert main(["replay", *QUICK, "--policies", "all-new,all-old,ecoscale", "--json",
                 "--out", str(tmp_path / "r")]) == 0
    document = _json_out(capsys)
    _check(document, REPLAY_SCHEMA, "replay")
    assert [row["policy"] for row in document["rows"]] == ["all-new", "all-old", "ecoscale"]
    for row in document["rows"]:
        _check(row, ROW_SCHEMA, row["policy"])
    summary = (tmp_path / "r" / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + len(document["rows"])


def test_plan_json_is_the_levels_and_search_summary(tmp_path, capsys):
    assert main(["plan", "--json", "--out", str(tmp_path / "t.yaml")]) == 0
    document = _json_out(capsys)
    _check(document, PLAN_SCHEMA, "plan")
    written = yaml.safe_load((tmp_path / "t.yaml").read_text())
    assert len(document["levels"]) == len(written["levels"])
    for level, on_file in zip(document["levels"], written["levels"], strict=True):
        _check(level, LEVEL_SCHEMA, f"level {level['max_load_qps']}")
        assert level["max_load_qps"] == pytest.approx(on_file["max_load_qps"])
    for key in ("space_before", "space_after", "latency_evaluations", "levels"):
        assert key in document["search"]


@pytest.mark.parametrize("args", [
    pytest.param(["replay", *QUICK, "--policies", "all-new"], id="replay"),
    pytest.param(["plan", "--levels", "0.5,1.0"], id="plan"),
])
def test_quiet_prints_nothing_on_success(tmp_path, capsys, args):
    out = tmp_path / ("r" if args[0] == "replay" else "t.yaml")
    assert main([*args, "--quiet", "--out", str(out)]) == 0
    assert main([*args, "--quiet", "--out", str(out)]) == 0      # replacing: no note either
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert out.exists()


# --- --out checked before any work, atomic writes -----------------------------------------

@pytest.mark.parametrize("command,make,fragment", [
    pytest.param("replay", "file", "is a file, and a folder is wanted", id="replay-file"),
    pytest.param("plan", "dir", "is a folder, and a file is wanted", id="plan-folder"),
    pytest.param("plan", "/dev/null", "not a regular file", id="plan-dev-null"),
    pytest.param("replay", "/dev/null", "is not a folder", id="replay-dev-null"),
    pytest.param("replay", "/proc/ecoscale-out", "cannot write", id="replay-unwritable"),
    pytest.param("plan", "/proc/ecoscale.yaml", "cannot write", id="plan-unwritable"),
    pytest.param("plan", "under-a-file", "is a file, not a folder", id="plan-parent-file"),
])
def test_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command, make, fragment):
    if make == "file":
        out = tmp_path / "taken"
        out.write_text("mine")
    elif make == "dir":
        out = tmp_path / "folder"
        out.mkdir()
    elif make == "under-a-file":
        (tmp_path / "file").write_text("mine")
        out = tmp_path / "file" / "t.yaml"
    else:
        out = Path(make)
    worked = []
    monkeypatch.setattr("ecoscale.adapters.files.load_topology",
                        lambda *a: worked.append(a) or pytest.fail("work began"))
    monkeypatch.setattr("ecoscale.replay.scenario.load_topology",
                        lambda *a: worked.append(a) or pytest.fail("work began"))
    assert main([command, "--out", str(out)]) == 2
    assert fragment in capsys.readouterr().err
    assert not worked
    assert not list(tmp_path.glob("**/*.tmp")) and not list(tmp_path.glob(".ecoscale-*"))
    if make == "file":
        assert out.read_text() == "mine"


def test_out_refuses_a_read_only_file_system(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refused)
    with pytest.raises(UsageError, match="cannot write in .*Read-only file system"):
        outputs.check_out_file(tmp_path / "t.yaml")
    with pytest.raises(UsageError, match="choose a folder you can write to"):
        outputs.check_out_dir(tmp_path / "out", OUTPUT_NAMES, OUTPUT_NAMES)


def test_replay_output_lines_are_wrapped(tmp_path, capsys):
    assert main(["replay", *QUICK, "--policies", "all-new", "--out", str(tmp_path)]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 100


def test_an_earlier_runs_outputs_are_named_and_never_mixed_with_a_new_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["replay", "--duration", "2h", "--policies", "all-new", "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs
    (out / "mine.txt").write_text("not ecoscale's")
    capsys.readouterr()
    assert main(["replay", *QUICK, "--policies", "all-new", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "replaced: summary.csv, steps.csv, report.md" in err
    assert "removed from the earlier run" in err and all(name in err for name in pngs)
    assert not list(out.glob("*.png"))          # no plot of the earlier run beside new CSVs
    assert (out / "mine.txt").read_text() == "not ecoscale's"
    assert not list(tmp_path.glob(".ecoscale-*"))


def test_a_failed_write_leaves_the_earlier_outputs_and_no_temporary(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "summary.csv").write_text("earlier")
    checked = outputs.check_out_dir(out, OUTPUT_NAMES, ["summary.csv"])

    def failing(folder: Path) -> list[Path]:
        (folder / "summary.csv").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        outputs.write_dir(checked, failing)
    assert (out / "summary.csv").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_write_yaml_is_atomic_and_leaves_no_temporary_on_failure(tmp_path):
    path = tmp_path / "t.yaml"
    write_yaml(path, {"a": 1})
    with pytest.raises(yaml.representer.RepresenterError):
        write_yaml(path, {"a": object()})
    assert yaml.safe_load(path.read_text()) == {"a": 1}
    with pytest.raises(OSError), outputs.atomic_path(tmp_path / "u.yaml") as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_plan_out_on_a_folder_leaves_no_tmp_folder(tmp_path, capsys):
    folder = tmp_path / "tables"
    folder.mkdir()
    assert main(["plan", "--out", str(folder)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]


# --- policies in the help, savings without all-new ----------------------------------

def test_replay_help_lists_every_policy():
    text = _help("replay")
    for name in POLICY_NAMES:
        assert f"\n  {name} " in text, name


def test_policies_without_all_new_still_report_savings(tmp_path, capsys):
    assert main(["replay", *QUICK, "--policies", "all-old,ecoscale", "--json",
                 "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    rows = {row["policy"]: row for row in json.loads(captured.out)["rows"]}
    assert set(rows) == {"all-new", "all-old", "ecoscale"}
    assert "all-new runs too, as the reference for savings" in captured.err
    for name in ("all-old", "ecoscale"):
        assert isinstance(rows[name]["saving_vs_all_new_pct"], float)
    assert rows["all-old"]["saving_vs_all_new_pct"] > 0
    assert "nan" not in (tmp_path / "r" / "summary.csv").read_text()


# --- times in human units -------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [
    pytest.param("500ms", 0.5, id="ms"), pytest.param("30s", 30, id="s"),
    pytest.param("30", 30, id="bare-seconds"), pytest.param("1.5m", 90, id="m"),
    pytest.param("2min", 120, id="min"), pytest.param("6h", 21600, id="h"),
    pytest.param("7d", 604800, id="d"), pytest.param("1w", 604800, id="w"),
])
def test_durations_accept_units(text, seconds):
    assert parse_duration_s(text, "--x") == pytest.approx(seconds)


@pytest.mark.parametrize("argv,field,seconds", [
    pytest.param(["lab", "load", "--rate", "5", "--duration", "30s"], "duration", 30,
                 id="lab-load-duration"),
    pytest.param(["lab", "load", "--schedule", "1,2", "--step-s", "500ms"], "step_s", 0.5,
                 id="lab-load-step"),
    pytest.param(["lab", "load", "--trace", "worldcup98", "--trace-start", "6h"],
                 "trace_start", 21600, id="lab-load-trace-start"),
    pytest.param(["lab", "evaluate", "--period-s", "10s"], "period_s", 10,
                 id="lab-evaluate-period"),
    pytest.param(["lab", "evaluate", "--move-time", "8s"], "move_time", 8,
                 id="lab-evaluate-move-time"),
    pytest.param(["profile", "--pool", "lab", "--warmup-s", "1m"], "warmup_s", 60,
                 id="profile-warmup"),
    pytest.param(["profile", "--pool", "lab", "--measure-s", "45"], "measure_s", 45,
                 id="profile-measure-bare"),
])
def test_duration_flags_accept_units_and_say_bare_numbers_are_seconds(argv, field, seconds):
    args = build_parser().parse_args(argv)
    assert getattr(args, field) == pytest.approx(seconds)
    words = tuple(w for w in argv[:2] if not w.startswith("-"))
    parser = dict(_subparsers(build_parser()))[words]
    action = next(a for a in parser._actions if a.dest == field)
    assert "bare number is in seconds" in action.help, action.option_strings


def test_every_duration_flag_says_a_bare_number_is_in_seconds():
    for words, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if getattr(action.type, "__name__", "") == "duration":
                assert "bare number is in seconds" in action.help, (words, action.dest)


def test_replay_says_its_window_in_dates(tmp_path, capsys):
    assert main(["replay", *QUICK, "--policies", "all-new", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "120 steps of 60 s: 1998-07-01 00:00 .. 07-01 01:59 UTC" in out
    assert "window 1998-07-01 00:00 .. 07-01 01:59 UTC (2 h)" in out     # provenance


def test_duration_errors_say_how_to_write_one(capsys):
    assert DURATION_HINT in str(pytest.raises(UsageError, parse_duration_s, "soon", "--x").value)


# --- plan: warnings, --strict, headroom labels, wrapped output --------------------------

def test_plan_warns_about_levels_it_cannot_serve_and_strict_fails(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    args = ["plan", "--peak-qps", "5000", "--levels", "0.5,1.0", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "cannot keep the SLO" in captured.err
    assert MISSES_SLO in captured.out
    assert out.exists()
    out.unlink()
    assert main([*args, "--strict"]) == 1
    assert "--strict" in capsys.readouterr().err
    assert not out.exists()


def test_a_level_that_meets_the_slo_but_not_the_headroom_says_so(tmp_path, capsys):
    assert main(["plan", "--profile", "lab", "--headroom", "0.05", "--levels", "0.9,1.0",
                 "--json", "--out", str(tmp_path / "t.yaml")]) == 0
    document = json.loads(capsys.readouterr().out)
    short = [lv for lv in document["levels"] if lv["status"] == MEETS_SLO_NOT_HEADROOM]
    assert short, "the lab profile at 95 % of the SLO misses the headroom near the peak"
    for level in short:
        assert not level["feasible"] and level["p99_ms"] <= document["slo_ms"]
    assert any("not the headroom" in w for w in document["warnings"])
    assert main(["plan", "--profile", "lab", "--headroom", "0.05", "--levels", "0.9,1.0",
                 "--strict", "--out", str(tmp_path / "t.yaml")]) == 1


def test_plan_text_is_wrapped_and_its_columns_stay_aligned(tmp_path, capsys):
    assert main(["plan", "--profile", "lab", "--oracle", "--headroom", "0.05",
                 "--levels", "0.2,0.9,1.0,1.2", "--out", str(tmp_path / "t.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("band g/kWh"))
    rows = [line for line in lines[lines.index(header) + 1:] if line.startswith("         -")]
    above = lines[lines.index(header) + 1:]
    assert all(len(line) <= 100 for line in lines if line not in rows), "not wrapped"
    assert sum(line.startswith("  1. ") for line in lines) == 1    # ranking in columns
    assert len(rows) == 4 and any("infeasible" in row for row in rows) and above
    for label in ("band g/kWh", "max req/s", "on new", "slots", "p99 ms", "gCO2e/h",
                  "oracle", "gap %"):
        end = header.index(label) + len(label)      # right-aligned: same right edge
        for row in rows:
            assert row[end - 1] != " " and row[end] == " ", (label, row)
    status_at = header.index("status")
    assert all(row[status_at - 1] == " " and row[status_at] != " " for row in rows)


# --- profiles: never overwrite a tracked file without --force -----------------------------

POOL = {"name": "lab", "frontend_url": "http://127.0.0.1:1", "prometheus_url":
        "http://127.0.0.1:2", "slot_cpus": {"new": 0.5, "old": 0.5},
        "replica_limits": {"new": 2, "old": 1}}


@pytest.fixture()
def tracked_profile(tmp_path):
    """A git work tree holding a tracked lab.yaml and its raw lab.csv."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    shipped = profiles_dir() / "socialNetwork"
    for name in ("lab.yaml", "lab.csv"):
        shutil.copy(shipped / name, repo / name)
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(POOL))
    for command in (["init", "-q"], ["add", "lab.yaml", "lab.csv"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    return repo


def test_refit_writes_beside_a_tracked_profile_and_says_where(tracked_profile, capsys):
    original = (tracked_profile / "lab.yaml").read_text()
    pool = str(tracked_profile.parent / "pool.yaml")
    assert main(["profile", "--pool", pool, "--refit",
                 "--out", str(tracked_profile / "lab.yaml")]) == 0
    captured = capsys.readouterr()
    assert (tracked_profile / "lab.yaml").read_text() == original
    refit = tracked_profile / "lab.refit.yaml"
    assert "tracked by git" in captured.err and str(refit) in captured.err + captured.out
    assert yaml.safe_load(refit.read_text())["services"]
    assert main(["profile", "--pool", pool, "--refit", "--force",
                 "--out", str(tracked_profile / "lab.yaml")]) == 0
    assert (tracked_profile / "lab.yaml").read_text() != original


def test_plan_writes_beside_a_tracked_table(tracked_profile, capsys):
    target = tracked_profile / "lab.yaml"       # any tracked file stands in for a table
    original = target.read_text()
    assert main(["plan", "--levels", "1.0", "--out", str(target)]) == 0
    assert target.read_text() == original
    assert (tracked_profile / "lab.new.yaml").exists()
    assert "tracked by git" in capsys.readouterr().err


def test_lab_colocation_dry_run_prints_the_plan_and_touches_nothing(capsys, tmp_path):
    out = tmp_path / "colo"
    assert main(["lab", "colocation", "--dry-run", "--loads", "30,60", "--out", str(out),
                 "--services", "home-timeline-service,post-storage-service"]) == 0
    text = capsys.readouterr().out
    assert "alone-old:home-timeline-service" in text
    assert "colocated-old:home-timeline-service+post-storage-service" in text
    assert "loads 30, 60 req/s" in text and "expected duration: about" in text
    assert not out.exists()
