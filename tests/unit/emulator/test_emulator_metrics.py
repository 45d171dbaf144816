"""Histogram buckets and the text exposition of the emulator's metrics."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ecoscale.emulator.metrics import EmulatorMetrics, Histogram, latency_buckets_s


def test_buckets_are_fine_enough_for_p99_between_half_a_millisecond_and_two_seconds():
    bounds = latency_buckets_s()
    assert list(bounds) == sorted(bounds)
    inside = [b for b in bounds if 0.0004 <= b <= 2.5]
    assert inside[0] <= 0.0005 and inside[-1] >= 2.0
    assert max(hi / lo for lo, hi in zip(inside, inside[1:], strict=False)) <= 1.34


@pytest.mark.parametrize("value, bucket", [(0.0001, 0.0001), (0.00011, 0.00012),
                                           (0.0035, 0.004), (99.0, float("inf"))],
                         ids=["on-bound", "just-above", "middle", "overflow"])
def test_observe_counts_a_value_in_the_first_bucket_that_holds_it(value, bucket):
    histogram = Histogram("h_seconds", "help", ("a",), latency_buckets_s())
    histogram.observe(("x",), value)
    text = "\n".join(histogram.render()) + "\n"
    samples = {float(s.labels["le"]): s.value
               for f in text_string_to_metric_families(text) for s in f.samples
               if s.name.endswith("_bucket")}
    first = min(le for le, count in samples.items() if count == 1)
    assert first == pytest.approx(bucket)
    assert samples[float("inf")] == 1


def test_label_values_are_escaped():
    metrics = EmulatorMetrics('we"ird\\name')
    metrics.record('end"point', 200, 0.01)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    labels = [s.labels for f in families for s in f.samples if s.name.endswith("_count")]
    assert labels == [{"service": 'we"ird\\name', "endpoint": 'end"point'}]
