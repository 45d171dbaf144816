"""The defaults and output names of `ecoscale lab colocation` (light: the CLI reads them to
build its help without importing the lab)."""

from __future__ import annotations

DEFAULT_SERVICES = ("home-timeline-service", "post-storage-service", "user-timeline-service")
"""The three socialNetwork services that use the most CPU alone on the lab's old node
(profiles/socialNetwork/lab.csv, alone-old rows: 0.31, 0.24 and 0.11 of it at 98 req/s)."""
DEFAULT_LOADS_QPS = (30.0, 50.0, 70.0)
"""Front-end loads (req/s): together the default services keep 0.3-0.65 of the old node
busy. At 100 req/s the 2-core machine itself is past its knee (services on *new* reached
200 ms p99 with one service on old), which measures the host, not the shared socket."""
DEFAULT_WARMUP_S = 5.0
DEFAULT_MEASURE_S = 25.0
"""Per point (s): five 5-s slices; 12 points and 12 placement changes fit in ~10 min."""

RAW_CSV = "colocation-raw.csv"
TABLE_CSV = "colocation.csv"
REPORT = "report.md"
OUTPUTS = (RAW_CSV, TABLE_CSV, REPORT)
