"""adapters.files: reading a user's YAML text (libyaml, numbers, hostile documents)."""

from __future__ import annotations

import gzip

import pytest

from ecoscale.adapters.files import decode_text, parse_yaml_text
from ecoscale.errors import InputError


@pytest.mark.parametrize("text,expected", [
    ("a: 1e3", {"a": 1000.0}),
    ("a: 2E-5", {"a": 2e-05}),
    ("a: 1.0e+3", {"a": 1000.0}),
    ("a: '1e3'", {"a": "1e3"}),
    ("a: 12", {"a": 12}),
    ("a: e3", {"a": "e3"}),
    ("a: &x 1", {"a": 1}),
    ("q: 1000 * rate(x[1m])", {"q": "1000 * rate(x[1m])"}),
], ids=["exponent", "negative-exponent", "yaml-1.1-float", "quoted-stays-text", "int",
        "word", "anchor-without-alias", "asterisk-in-text"])
def test_yaml_values(text, expected):
    assert parse_yaml_text(text, "f.yaml") == expected


@pytest.mark.parametrize("text,fragment", [
    ("a: &a [1]\nb: *a", "line 2: YAML aliases (*a) are not accepted"),
    ("a: &a [*a]", "YAML aliases (*a)"),
    ("x: " + "[" * 200 + "]" * 200, "nested more than 64 levels deep"),
    ("x:\n" + "- " * 200 + "1", "nested more than 64 levels deep"),
    ("a: [", "not valid YAML"),
    ("a: !!python/name:os.system", "not valid YAML"),
], ids=["alias", "recursive-alias", "deep-flow", "deep-block", "syntax", "python-tag"])
def test_hostile_or_broken_yaml_is_refused(text, fragment):
    with pytest.raises(InputError) as info:
        parse_yaml_text(text, "f.yaml")
    assert str(info.value).startswith("f.yaml: ") and fragment in str(info.value)


@pytest.mark.parametrize("data,fragment", [
    (gzip.compress(b"a: 1"), "gzip-compressed"),
    (b"PK\x03\x04rest", "archive or compressed"),
    ("a: 1".encode("utf-16"), "UTF-16"),
    (b"\x00\x01\x02", "binary"),
    ("a: café".encode("latin-1"), "line 1: byte 0xe9 is not UTF-8"),
], ids=["gzip", "zip", "utf-16", "binary", "latin-1"])
def test_bytes_that_are_not_utf8_text(data, fragment):
    with pytest.raises(InputError, match=fragment):
        decode_text(data, "f.yaml")


def test_utf8_with_bom_is_text():
    assert decode_text("\ufeffa: 1".encode(), "f.yaml") == "a: 1"
