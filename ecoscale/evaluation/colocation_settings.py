"""The defaults and output names of `ecoscale lab colocation` (light: the CLI reads them to
build its help without importing the lab)."""

from __future__ import annotations

DEFAULT_SERVICES = ("home-timeline-service", "post-storage-service", "user-timeline-service")
"""The three socialNetwork services that use the most CPU alone on the lab's old node
(profiles/socialNetwork/lab.csv, alone-old rows: 0.31, 0.24 and 0.11 of it at 98 req/s)."""
DEFAULT_LOADS_QPS = (40.0, 70.0, 100.0)
"""Front-end loads (req/s): together the default services keep from about a quarter to
two thirds of the old node busy, below the lab's all-new saturation (~130 req/s)."""
DEFAULT_WARMUP_S = 5.0
DEFAULT_MEASURE_S = 20.0
"""Per point: as the lab's shipped profile was measured (5-s slices, at least three)."""

RAW_CSV = "colocation-raw.csv"
TABLE_CSV = "colocation.csv"
REPORT = "report.md"
OUTPUTS = (RAW_CSV, TABLE_CSV, REPORT)
