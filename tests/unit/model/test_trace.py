import numpy as np
import pytest

from ecoscale.errors import InputError
from ecoscale.model.trace import Trace

HOURLY = Trace("t", np.array([0.0, 60.0, 120.0, 60.0]), step_s=3600, unit="x")


def test_at_reads_by_elapsed_time():
    assert HOURLY.at(0) == 0 and HOURLY.at(3599) == 0 and HOURLY.at(3600) == 60
    assert HOURLY.at(10 ** 9) == 60  # clamps to the last value


@pytest.mark.parametrize("how,expected_second", [("linear", 1.0), ("hold", 0.0)])
def test_refine(how, expected_second):
    fine = HOURLY.resample(60, how)
    assert len(fine.values) == 240
    assert fine.values[1] == pytest.approx(expected_second)


def test_coarsen_takes_means():
    coarse = HOURLY.resample(7200, "linear")
    assert coarse.values.tolist() == [30.0, 90.0]


def test_window_and_scale():
    part = HOURLY.window(3600, 7200)
    assert part.values.tolist() == [60.0, 120.0]
    assert part.scaled_to_peak(3000).values.tolist() == [1500.0, 3000.0]
    with pytest.raises(InputError, match="outside the trace"):
        HOURLY.window(3 * 3600, 7200)
