"""The host's CPU steal from /proc/stat texts."""

from __future__ import annotations

import pytest

from ecoscale.adapters.hostcpu import (
    CpuTimes,
    parse_cpu_times,
    read_cpu_times,
    stolen_share,
    stolen_text,
)

# user nice system idle iowait irq softirq steal guest guest_nice (ticks of 1/100 s)
BEFORE = "cpu  597714 0 251733 8214636 4091 0 27089 178258 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
AFTER = "cpu  597958 0 251817 8215006 4111 0 27113 178624 0 0\n"


def test_the_cpu_line_is_read_in_seconds():
    times = parse_cpu_times(BEFORE)
    assert times == CpuTimes(busy_s=(597714 + 251733 + 27089) / 100,
                             idle_s=(8214636 + 4091) / 100, stolen_s=1782.58)


def test_the_share_stolen_is_of_the_demand_not_of_the_wall_time():
    # 3.52 s ran and 3.66 s were stolen: half of what the machine's work wanted
    share = stolen_share(parse_cpu_times(BEFORE), parse_cpu_times(AFTER))
    assert share == pytest.approx(366 / (244 + 84 + 24 + 366))
    assert "51 %" in stolen_text(share) and "slowed machine" in stolen_text(share)
    assert "slowed" not in stolen_text(0.02)


def test_no_reading_or_no_demand_is_not_known():
    idle = parse_cpu_times(BEFORE)
    assert stolen_share(None, idle) is None and stolen_share(idle, idle) is None
    assert "not known" in stolen_text(None)


def test_an_old_kernel_without_a_steal_field_reads_no_steal():
    assert parse_cpu_times("cpu 10 0 5 100\n").stolen_s == 0.0
    with pytest.raises(ValueError, match="no 'cpu' line"):
        parse_cpu_times("intr 1 2 3\n")


def test_this_host_answers_or_says_it_cannot(tmp_path):
    assert read_cpu_times(tmp_path / "missing") is None
    times = read_cpu_times()
    assert times is None or times.busy_s + times.idle_s > 0
