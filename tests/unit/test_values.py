"""values.number / parse_number_text / flag / number_at: the one number reader."""

from __future__ import annotations

import argparse
import math

import pytest

from ecoscale.values import BadNumber, flag, integer_flag, number, number_at, parse_number_text


@pytest.mark.parametrize("value,bounds,expected", [
    (3, {}, 3.0),
    (2.5, {"minimum": 0, "maximum": 3}, 2.5),
    (0, {"minimum": 0}, 0.0),
    (4.0, {"integer": True}, 4),
    (math.inf, {"allow_inf": True}, math.inf),
], ids=["int", "in-range", "inclusive-minimum", "whole-float-as-int", "open-limit"])
def test_good_numbers(value, bounds, expected):
    assert number(value, "f", **bounds) == expected


@pytest.mark.parametrize("value,bounds,fragment", [
    (math.nan, {}, "f must be a finite number, got nan"),
    (math.nan, {"allow_inf": True}, "finite"),
    (math.inf, {}, "finite"),
    (-math.inf, {"allow_inf": True}, "finite"),
    (True, {}, "got True (true/false is not a number)"),
    ("3", {}, "got '3' (text, not a number; write the number without quotes)"),
    ("abc", {}, "f must be a number, got 'abc'"),
    (None, {}, "got None"),
    ([1], {}, "got [1]"),
    (-1, {"minimum": 0}, "f must be a number >= 0, got -1"),
    (0, {"above": 0}, "> 0"),
    (1, {"below": 1}, "< 1"),
    (2_592_001, {"maximum": 2_592_000}, "<= 2,592,000"),
    (1.5, {"integer": True}, "f must be a whole number, got 1.5"),
    (0, {"integer": True, "minimum": 1}, "f must be a whole number >= 1"),
], ids=["nan", "nan-even-with-inf", "inf", "minus-inf", "bool", "quoted", "text", "none",
        "list", "below-minimum", "not-above", "not-below", "above-maximum", "fraction",
        "whole-below-minimum"])
def test_bad_numbers_name_the_field_and_the_range(value, bounds, fragment):
    with pytest.raises(BadNumber) as info:
        number(value, "f", **bounds)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text,expected", [
    ("3", 3.0), (" 2.5 ", 2.5), ("1e3", 1000.0), ("1_000", 1000.0),
], ids=["int", "spaces", "exponent", "underscore"])
def test_number_text(text, expected):
    assert parse_number_text(text, "--x") == expected


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "", "abc", "0x10", "1e400"],
                         ids=["nan", "inf", "minus-inf", "empty", "word", "hex", "overflow"])
def test_bad_number_text(text):
    with pytest.raises(BadNumber):
        parse_number_text(text, "--x")


@pytest.mark.parametrize("text,fragment", [
    ("nan", "must be a finite number > 0"), ("0", "must be a number > 0, got 0"),
    ("lots", "'lots' is not a number"),
], ids=["nan", "zero", "word"])
def test_flag_is_an_argparse_type_error_without_the_flag_name(text, fragment):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        flag("--peak-qps", above=0)(text)
    assert fragment in str(info.value) and not str(info.value).startswith("--peak-qps")


def test_integer_flag_returns_an_int():
    assert integer_flag("--steps", minimum=1)("12") == 12
    with pytest.raises(argparse.ArgumentTypeError, match="whole number"):
        integer_flag("--steps", minimum=1)("2.5")


@pytest.mark.parametrize("raw,kwargs,expected,problem", [
    ({"k": 2}, {}, 2.0, None),
    ({}, {"default": 7.0}, 7.0, None),
    ({"k": None}, {"default": 7.0}, 7.0, None),
    ({}, {"minimum": 0}, math.nan, "s.k: required, a number >= 0"),
    ({"k": math.nan}, {"fallback": 1.0}, 1.0, "s.k must be a finite number"),
    ("not a mapping", {"default": 3.0}, 3.0, None),
], ids=["present", "absent-default", "null-default", "absent-required", "bad-fallback",
        "not-a-mapping"])
def test_number_at_collects_problems(raw, kwargs, expected, problem):
    problems: list[str] = []
    result = number_at(raw, "k", problems, where="s.", **kwargs)
    assert (math.isnan(result) and math.isnan(expected)) or result == expected
    assert problems == ([] if problem is None else [p for p in problems if problem in p])
    assert bool(problems) == (problem is not None)
