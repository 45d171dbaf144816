"""The bad-input corpus (tests/fixtures/bad/cases.yaml): every case is a clear error.

Each case writes the base files of tests/fixtures/bad/base/ and its own bad files into a
fresh folder, runs one command line in-process (``ecoscale.cli.main``) under a time bound,
and expects a non-zero exit (exactly 2 for a bad flag value) with its message on stderr:
no traceback, no hang, nothing accepted. A few ``expect_exit: 0`` cases show that the base
files themselves are good, so that a refusal means the bad part was seen.
"""

from __future__ import annotations

import gzip
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecoscale.cli import build_parser, main
from ecoscale.daemon import main as daemon_main
from ecoscale.testing import FakeAdapters, RecordedPrometheus, vector_reply

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "bad"
REPO = HERE.parents[2]
MANIFEST = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = MANIFEST["cases"]
TIME_BOUND_S = 20


class Hang(Exception):
    """A case ran longer than its time bound."""


def _fill(text: str, folder: Path) -> str:
    return text.replace("{dir}", str(folder)).replace("{repo}", str(REPO))


def _write(folder: Path, name: str, spec: Any) -> None:
    """One file of a case: plain text, or a mapping that derives it from a base file."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, str):
        path.write_text(_fill(spec, folder), encoding="utf-8")
        return
    if "sparse_bytes" in spec:   # a huge file without writing it
        with path.open("wb") as handle:
            handle.truncate(int(spec["sparse_bytes"]))
        return
    if "hex" in spec:
        path.write_bytes(bytes.fromhex(spec["hex"]))
        return
    text = spec.get("text")
    if text is None:
        text = (folder / spec["from"]).read_text(encoding="utf-8")
    for old, new in spec.get("replace", []):
        old, new = _fill(old, folder), _fill(new, folder)
        assert old in text, f"{name}: '{old}' not in the base file (the case is stale)"
        text = text.replace(old, new)
    if "repeat" in spec:
        text = text + spec["repeat"] * int(spec["times"])
    text = _fill(text, folder)
    data = text.encode(spec.get("encoding", "utf-8"))
    if spec.get("gzip"):
        data = gzip.compress(data)
    path.write_bytes(data)


def _fake_adapters() -> FakeAdapters:
    config = yaml.safe_load((HERE / "base" / "daemon.yaml").read_text(encoding="utf-8"))
    queries = (config["prometheus"]["qps"], config["prometheus"]["p99_ms"])
    return FakeAdapters(prometheus_client=RecordedPrometheus(
        {query: vector_reply(({}, 1.0, 1.0)) for query in queries}))


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"no answer within {TIME_BOUND_S} s")


def _run(case: dict[str, Any], folder: Path) -> int:
    template = MANIFEST["commands"][case["command"]]
    argv = [_fill(a, folder) for a in [*template, *case.get("args", [])]]
    if case.get("parse_only"):     # lab commands: parse, never run
        build_parser().parse_args(argv)
        return 0
    return main(argv)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_a_clear_error(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for base in (HERE / "base").iterdir():
        (tmp_path / base.name).write_text(_fill(base.read_text(encoding="utf-8"), tmp_path),
                                          encoding="utf-8")
    for name, spec in (case.get("files") or {}).items():
        _write(tmp_path, name, spec)
    # The daemon names its app, and `run` compares that name with the table's app: the
    # topology is also the file ./toy, which load_topology("toy") finds in the case folder.
    shutil.copy(tmp_path / "topology.yaml", tmp_path / "toy")
    if case["command"] == "check":
        # `run --check` asks every adapter once after the files pass: the corpus is about the
        # files, so the adapters are fakes that answer the toy config's queries
        monkeypatch.setattr(daemon_main, "ADAPTERS", _fake_adapters())
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_BOUND_S)
    try:
        code = _run(case, tmp_path)
    except SystemExit as exc:      # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = case["expect_exit"]
    if expected == 0:
        assert code == 0, err
        return
    assert code != 0, f"accepted: exit 0 for a bad input ({case['id']})"
    if expected == "usage":
        assert code == 2, err
    assert case["expect_stderr"] in err, err


def test_corpus_covers_every_family():
    families: dict[str, int] = {}
    for case in CASES:
        if case["expect_exit"] != 0:
            families[case["family"]] = families.get(case["family"], 0) + 1
    assert set(families) >= {"numbers", "encodings", "gaps", "cross-file", "flags"}
    assert sum(families.values()) >= 150, families


def test_case_ids_are_unique():
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids))
