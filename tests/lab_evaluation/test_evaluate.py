"""A shortened live evaluation on the lab (`ecoscale lab evaluate`): the daemon with the
policy table planned from the lab's measured profile, against a compressed day of load.

NOT YET PART OF CI (issue 7 is open). Two 5-minute runs of these settings on 2026-11-24 were
within the SLO in 59 % and 67 % of the settled periods, but the second failed the low-load
check: after the peak the daemon moves services back to old at most 3 per period, and the
last ten periods (7 hours of the compressed trace) were still spent doing so. A move on this
2-core lab also stalls the app for a period or two (p99 of seconds). Run it by hand with
``python3 -m pytest tests/lab_evaluation`` (root; brings the lab up like tests/integration)."""

from __future__ import annotations

import pandas as pd
import pytest

from ecoscale.lab.evaluate import EvaluationOptions, compressed_scenario, evaluate

pytestmark = pytest.mark.integration


def test_short_evaluation_uses_old_at_low_load_new_at_peak_and_mostly_meets_the_slo(
        social_network, tmp_path):
    # A smoke test of the whole loop, not the evaluation itself. The window (WorldCup98 from
    # 1998-06-30 12:00 UTC, one day) has a match-day peak and a long night, so that low load
    # and peak both last several periods; it peaks at 85 % of the SLO load (at the SLO load
    # all-new itself sits on the SLO, and 10-s p99 windows on a busy 2-core machine scatter
    # around it), and the plan keeps 5 % of the SLO free.
    window = {"start": "12h", "duration": "1d"}
    slo_load = float(compressed_scenario(EvaluationOptions(minutes=3.0)).load_qps.max())
    options = EvaluationOptions(minutes=5.0, period_s=10.0, policies=("ecoscale",),
                                peak_qps=0.85 * slo_load, headroom=0.05, **window)
    table = evaluate(options, tmp_path, log=print)
    steps = pd.read_csv(tmp_path / "measured_steps.csv")
    steps = steps[steps.policy == "ecoscale"].reset_index(drop=True)
    assert len(steps) >= 25
    settled = steps.iloc[3:]   # the first periods still carry the warm-up's moves
    low = settled[settled.load_qps <= settled.load_qps.quantile(0.25)]
    peak = settled[settled.load_qps >= settled.load_qps.quantile(0.85)]
    assert low.slots_old.mean() > low.slots_new.mean(), low[["load_qps", "slots_old",
                                                             "slots_new"]]
    assert peak.slots_new.max() > 0 and peak.slots_new.mean() > low.slots_new.mean()
    within = float((~settled.slo_violated).mean())
    assert within > 0.5, f"within the SLO in only {within:.0%} of periods"
    report = (tmp_path / "report.md").read_text()
    assert "EMULATED" in report and "MODELLED" in report
    row = table.set_index("policy").loc["ecoscale"]
    assert row.moves_measured > 0 and row.daemon_rss_mb > 0
    for name in ("comparison.csv", "lab_evaluation.png", "lab_carbon.png"):
        assert (tmp_path / name).stat().st_size > 0
