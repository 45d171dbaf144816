"""Host helpers that need no root: waiting, mount listing, process checks, CLI parsing."""

import argparse
import os
from pathlib import Path

import pytest

from ecoscale.cli import build_parser
from ecoscale.cli import lab as lab_cli
from ecoscale.lab.lab import _only_empty_dirs
from ecoscale.lab.system import LabError, NotYet, mounts_under, pid_alive, poll, read_pid
from ecoscale.testing import FakeClock


def test_poll_returns_the_first_real_answer():
    answers = iter([None, False, NotYet, "done"])

    def check():
        value = next(answers)
        if value is NotYet:
            raise NotYet("still starting")
        return value

    clock = FakeClock()
    assert poll(check, 5, "a thing", interval_s=1.0, clock=clock) == "done"
    assert clock.slept == [1.0, 1.5, 2.25]   # the interval grows, in virtual time


def test_poll_times_out_with_the_last_reason():
    def check():
        raise NotYet("engine says no")

    clock = FakeClock()
    with pytest.raises(LabError, match="after 10 s waiting for the engine: engine says no"):
        poll(check, 10, "the engine", interval_s=1.0, max_interval_s=3.0, clock=clock)
    assert sum(clock.slept) == 10 and max(clock.slept) == 3.0


def test_mounts_under_lists_deepest_first():
    assert mounts_under(Path("/proc"))[-1] == "/proc"
    assert mounts_under(Path("/no/such/place")) == []


def test_process_helpers(tmp_path):
    pidfile = tmp_path / "pid"
    pidfile.write_text(f"{os.getpid()}\n")
    assert read_pid(pidfile) == os.getpid() and pid_alive(os.getpid())
    assert read_pid(tmp_path / "missing") is None
    assert not pid_alive(2 ** 22 + 1)


def test_only_empty_dirs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert _only_empty_dirs(tmp_path)
    (tmp_path / "a" / "file").write_text("x")
    assert not _only_empty_dirs(tmp_path)
    assert not _only_empty_dirs(tmp_path / "missing")


def test_lab_commands_are_wired_with_help():
    parser = build_parser()
    args = parser.parse_args(["lab", "up", "--old-nodes", "2", "--old-cpu-factor", "0.4"])
    assert (args.old_nodes, args.old_cpu_factor, args.new_nodes) == (2, 0.4, 1)
    args = parser.parse_args(["lab", "load", "--rate", "50", "--duration", "10"])
    assert args.func is lab_cli._cmd_load
    for action in ("up", "down", "status", "deploy", "load"):
        with pytest.raises(SystemExit):
            parser.parse_args(["lab", action, "--help"])


@pytest.mark.parametrize("argv, expected", [
    (["--rate", "50", "--duration", "5"], (50.0, None)),
    (["--schedule", "10, 20,30"], (None, [10.0, 20.0, 30.0])),
], ids=["rate", "schedule"])
def test_load_flags_become_a_rate_or_a_schedule(argv, expected):
    args = build_parser().parse_args(["lab", "load", *argv])
    rate, schedule, _ = lab_cli._schedule(args)
    assert (rate, schedule) == expected


def test_a_trace_is_scaled_to_its_peak():
    args = build_parser().parse_args(["lab", "load", "--trace", "worldcup98", "--peak-qps",
                                      "120", "--steps", "30"])
    rate, schedule, what = lab_cli._schedule(args)
    assert rate is None and len(schedule) == 30
    assert max(schedule) == pytest.approx(120.0) and min(schedule) > 0
    assert "worldcup98" in what


def test_load_needs_exactly_one_kind_of_rate():
    args = argparse.Namespace(rate=None, schedule=None, trace=None)
    with pytest.raises(Exception, match="exactly one of"):
        lab_cli._schedule(args)


@pytest.mark.parametrize("args, ours", [
    (["dockerd", "--config-file", "/lab/nodes/new-1/daemon.json"], True),
    (["dockerd", "--host", "unix:///lab/nodes/new-1/docker.sock"], True),
    (["containerd", "--config=/lab/nodes/old-1/exec/containerd/containerd.toml"], True),
    (["containerd-shim-runc-v2", "-namespace", "moby", "-address",
      "/lab/nodes/new-1/exec/containerd/containerd.sock"], True),
    (["tail", "-f", "/lab/nodes/new-1/dockerd.log"], False),
    (["sudo", "ecoscale", "lab", "--state-dir", "/lab", "down"], False),
    (["dockerd", "--config-file", "/labelled/daemon.json"], False),
], ids=["dockerd", "socket", "containerd", "shim", "tail", "sudo", "other-folder"])
def test_only_the_lab_daemons_count_as_its_processes(args, ours):
    from ecoscale.lab.engines import _names_our_folder

    assert _names_our_folder(args, "/lab/") is ours


def test_a_socket_no_process_listens_on_is_stale(tmp_path):
    import socket

    from ecoscale.lab.system import stale_sockets

    (tmp_path / "s").mkdir()
    live, gone = tmp_path / "s" / "live", tmp_path / "s" / "gone"
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(live))
    listening.listen()
    closed = socket.socket(socket.AF_UNIX)
    closed.bind(str(gone))
    closed.close()                       # its file stays, as a killed shim's does
    (tmp_path / "s" / "file").write_text("not a socket")
    try:
        assert stale_sockets(tmp_path) == [gone]
        assert stale_sockets(tmp_path / "absent") == []
    finally:
        listening.close()
