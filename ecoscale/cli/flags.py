"""argparse ``type=`` readers shared by the commands (numbers: ``ecoscale.values.flag``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ecoscale.errors import UsageError
from ecoscale.model.trace import parse_duration_s


def duration_flag(name: str, positive: bool = True,
                  minimum_s: float | None = None) -> Callable[[str], float]:
    """An argparse ``type=`` for a duration flag: '30s', '5m', '1h' or seconds -> seconds,
    > 0 when ``positive``, at least ``minimum_s`` when given."""
    def parse(text: str) -> float:
        try:
            seconds = parse_duration_s(text, name)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{name}: ")) from None
        if positive and not seconds > 0:
            raise argparse.ArgumentTypeError(f"must be > 0 s, got '{text}'")
        if minimum_s is not None and not seconds >= minimum_s:
            raise argparse.ArgumentTypeError(f"must be >= {minimum_s:g} s, got '{text}'")
        return seconds

    parse.__name__ = "duration"
    return parse

