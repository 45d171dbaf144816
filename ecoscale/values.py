"""One way to read a number from any file or flag: finite, in range, of the right type.

Every parser (profiles, topologies, hardware, tables, pool and daemon configs, traces,
command-line flags) reads its numbers with :func:`number`, so that NaN, infinity, booleans
(YAML ``true`` is not 1) and out-of-range values are refused with the same kind of message:
the field, what was given, what is allowed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from ecoscale.errors import UsageError


class BadNumber(ValueError):
    """A value that is not an acceptable number; ``str()`` is the whole message."""


def number(value: Any, field: str, *, minimum: float | None = None,
           maximum: float | None = None, above: float | None = None,
           below: float | None = None, integer: bool = False,
           allow_inf: bool = False) -> float:
    """``value`` as a finite float (or int with ``integer``), or BadNumber naming ``field``.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones.
    Strings are not numbers here (a YAML file that says ``"3"`` has quoted it); flags go
    through :func:`flag` which parses the text first. ``allow_inf`` lets +inf through (an
    open upper limit such as ``max_ci_g_per_kwh: .inf``); NaN never passes.
    """
    allowed = _range_text(minimum, maximum, above, below)
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadNumber(f"{field} must be {kind}{allowed}, got {value!r}{_hint(value)}")
    result = float(value)
    if math.isnan(result) or (math.isinf(result) and not (allow_inf and result > 0)):
        raise BadNumber(f"{field} must be a finite number{allowed}, got {value!r}")
    if integer and result != int(result):
        raise BadNumber(f"{field} must be a whole number{allowed}, got {value!r}")
    if ((minimum is not None and result < minimum) or (maximum is not None and result > maximum)
            or (above is not None and not result > above)
            or (below is not None and not result < below)):
        raise BadNumber(f"{field} must be {kind}{allowed}, got {value!r}")
    return int(result) if integer else result


def _hint(value: Any) -> str:
    """Why a value that looks like a number is not one here."""
    if isinstance(value, bool):
        return " (true/false is not a number)"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (text, not a number; write the number without quotes)"
    return ""


def _range_text(minimum: float | None, maximum: float | None, above: float | None,
                below: float | None) -> str:
    parts = [f"{sign} {_shown(bound)}" for sign, bound in
             ((">=", minimum), (">", above), ("<=", maximum), ("<", below)) if bound is not None]
    return (" " + " and ".join(parts)) if parts else ""


def _shown(bound: float) -> str:
    """A bound as a reader writes it: 2,592,000 rather than 2.592e+06."""
    if float(bound).is_integer() and abs(bound) >= 10_000:
        return f"{int(bound):,}"
    return f"{bound:g}"


def parse_number_text(text: str, field: str, **bounds: Any) -> float:
    """A number written as text (a flag, a CSV cell): parsed, then checked as :func:`number`."""
    stripped = text.strip()
    try:
        value: float = int(stripped)
    except ValueError:
        try:
            value = float(stripped)
        except ValueError:
            raise BadNumber(f"{field}: '{text}' is not a number") from None
    return number(value, field, **bounds)


def flag(name: str, **bounds: Any) -> Callable[[str], float]:
    """An argparse ``type=`` for a numeric flag: a bad value is a usage error naming the flag.

    ``flag("--peak-qps", above=0)`` refuses ``nan``, ``inf``, ``0`` and ``abc`` alike.
    """
    def parse(text: str) -> float:
        try:
            return parse_number_text(text, name, **bounds)
        except BadNumber as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{name} ").removeprefix(
                f"{name}: ")) from None

    parse.__name__ = "number"   # argparse shows "invalid number value" for other failures
    return parse


def usage(exc: BadNumber) -> UsageError:
    """A BadNumber met while reading flags, as the usage error (exit 2) the CLI reports."""
    return UsageError(str(exc))


_REQUIRED: Any = object()


def number_at(raw: Any, key: str, problems: list[str], *, where: str = "",
              default: Any = _REQUIRED, fallback: float = math.nan, **bounds: Any) -> Any:
    """``raw[key]`` read with :func:`number`; a problem is appended, never raised.

    For parsers that report every problem at once: a missing key gives ``default`` (or a
    "required" problem when there is none); a bad value appends the message (prefixed with
    ``where``) and returns ``fallback`` so that parsing goes on. ``raw`` that is not a
    mapping counts as empty.
    """
    field = f"{where}{key}"
    value = raw.get(key, _REQUIRED) if hasattr(raw, "get") else _REQUIRED
    if value is _REQUIRED or value is None:
        if default is not _REQUIRED:
            return default
        allowed = _range_text(bounds.get("minimum"), bounds.get("maximum"),
                              bounds.get("above"), bounds.get("below"))
        problems.append(f"{field}: required, a number{allowed}")
        return fallback
    try:
        return number(value, field, **bounds)
    except BadNumber as exc:
        problems.append(str(exc))
        return fallback


def integer_flag(name: str, **bounds: Any) -> Callable[[str], int]:
    """:func:`flag` for a whole number (``--steps``, ``--seed``)."""
    parse = flag(name, integer=True, **bounds)
    return parse  # type: ignore[return-value]
