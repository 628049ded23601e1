"""No input makes parsing raise anything but a one-line ConfigError; what parses prints and reads back."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from test_config_schema import full_config, with_ping_urls_shown

from mail_monitor.config import ConfigError, parse_config
from mail_monitor.config import schema as s
from mail_monitor.config.render import redacted

KEY_NAMES = sorted({key.name for section in s.SECTIONS for key in section.keys} | set(s.TOP_LEVEL)
                   | {"self", "ntfy", "smtp", "imap"})
INTERESTING = ["90s", "1d", "0", "250ms", "99999999999d", "1e308", "inf", "nan", "-1s", "self", "none", "implicit",
               "async", "gmail", "spf", "127.0.0.1:53", "[::1]:5353", "example.org", "zen.spamhaus.org",
               "https://x.example/{status}", "a@b.example", "/tmp/x.prom", "192.0.2.1", "2001:db8::1", "",
               "x\ny", "\x1b[2J", "k" * 300]

scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, 65535, 65536, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(INTERESTING),
    st.datetimes(),
    st.dates(),
    st.times(),
)
keys = st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                      max_leaves=25)

hostile = st.sampled_from([10**400, -(10**400), float("nan"), float("inf"), -float("inf"), 1e308, -1, 2**63,
                           "99999999999d", "1" * 5000, "x\ny", "\x00", "é", [], {}])
replacements = st.one_of(hostile, scalars, values)

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(data: dict[str, Any]) -> None:
    try:
        config = parse_config(data, "fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ")
        assert all(c.isprintable() for c in message), repr(message)
        assert len(message) < 800
        return
    printed = redacted(config)
    assert parse_config(printed, "fuzz.toml") == with_ping_urls_shown(config, printed)


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_random_documents(data: dict[str, Any]) -> None:
    check(data)


def _mutate(draw: st.DrawFn, node: Any) -> Any:
    """Replace, delete or add one thing somewhere inside ``node``."""
    if isinstance(node, dict) and node:
        choice = draw(st.integers(0, 3))
        key = draw(st.sampled_from(sorted(node)))
        if choice == 0:
            node[key] = draw(replacements)
        elif choice == 1:
            del node[key]
        elif choice == 2:
            node[draw(keys)] = draw(values)
        else:
            node[key] = _mutate(draw, node[key])
        return node
    if isinstance(node, list) and node:
        index = draw(st.integers(0, len(node) - 1))
        if draw(st.booleans()):
            node[index] = _mutate(draw, node[index])
        else:
            node.append(draw(values))
        return node
    return draw(values)


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(full_config())
    for _ in range(draw(st.integers(1, 3))):
        data = _mutate(draw, data)
    return data  # type: ignore[no-any-return]


@FUZZ
@given(mutated_configs())
def test_mutated_valid_configs(data: dict[str, Any]) -> None:
    check(data)


def test_the_base_of_the_mutations_is_valid() -> None:
    check(full_config())
    assert parse_config(full_config(), "x").postfix_queue is not None


HOSTILE = [10**400, -(10**400), float("nan"), float("inf"), -float("inf"), 1e308, -1, 0, 2**63, True, "",
           "99999999999d", "1" * 5000, "x\ny", "\x00", "\u202e", "é" * 70, [], [None], {}, {"a": {"b": []}},
           datetime.datetime(2026, 1, 1), datetime.time(1, 2)]


def test_every_key_with_every_hostile_value() -> None:
    """Systematic where the fuzzers are random: each key of each section gets each hostile value."""
    from test_config_schema import table_of

    tried = 0
    for section in s.SECTIONS:
        for key in section.keys:
            for value in HOSTILE:
                data = full_config()
                table_of(data, section)[key.name] = value
                check(data)
                tried += 1
    assert tried > 1500


@settings(deadline=None, database=None)
@given(st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=365 * 86400)))
def test_printed_durations_read_back_exactly(seconds: float) -> None:
    from mail_monitor.config import format_duration, parse_duration

    assert parse_duration(format_duration(seconds)) == seconds
