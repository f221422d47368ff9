"""Calendar buckets (gumshoe/timebuckets.py) against zoneinfo itself (tests/reference.py):
random instants and zones, instants next to DST gaps and overlaps, 30/45-minute offsets."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gumshoe import timebuckets as tb

from .. import reference

UINT32_MAX = 2**32 - 1
INTERESTING = (
    "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
    "Australia/Lord_Howe", "America/St_Johns", "Pacific/Chatham", "Pacific/Apia",
    "America/Sao_Paulo", "America/Havana", "America/Santiago", "Asia/Tehran", "Africa/Casablanca",
    "Europe/Dublin", "Africa/Monrovia", "Pacific/Kiritimati", "Etc/GMT+12", "Antarctica/Troll",
    "Asia/Gaza",
)
ALL_ZONES = sorted(zoneinfo.available_timezones())


@pytest.fixture(autouse=True)
def scan_kernels() -> Iterator[None]:
    yield  # no scan here: run once, not once per kernel


def check(t: int, unit: str, zone: str) -> None:
    got = int(tb.bucket_starts(np.array([t], np.int64), unit, zone)[0])
    assert got == reference.bucket_start(t, unit, zone), (t, unit, zone)
    z = zoneinfo.ZoneInfo(zone)
    local = reference.truncate_local(reference._wall(t, z), unit)
    # the start lies in the same bucket, not after t, and the second before it is outside
    assert got <= t
    assert reference.truncate_local(reference._wall(got, z), unit) == local
    assert reference._wall(got - 1, z) < local


@settings(max_examples=200)
@given(t=st.integers(0, UINT32_MAX), unit=st.sampled_from(tb.UNITS),
       zone=st.sampled_from(INTERESTING) | st.sampled_from(ALL_ZONES))
def test_random_instants_and_zones(t: int, unit: str, zone: str) -> None:
    check(t, unit, zone)


@st.composite
def near_transitions(draw: st.DrawFn) -> tuple[int, str, str]:
    """An instant within a day of one of the zone's UTC offset changes (gaps and overlaps)."""
    zone = draw(st.sampled_from(INTERESTING[1:]) | st.sampled_from(ALL_ZONES))
    year = draw(st.integers(1970, 2105))
    lo = int(np.datetime64(f"{year}-01-01", "s").astype(np.int64))
    trans, _ = tb.transitions(zone, lo, lo + 365 * 86400)
    inside = [int(x) for x in trans if lo <= x < lo + 366 * 86400]
    base = draw(st.sampled_from(inside)) if inside else lo
    delta = draw(st.integers(-3, 3) | st.integers(-3 * 3600, 3 * 3600)
                 | st.integers(-86400, 86400))
    return min(max(base + delta, 0), UINT32_MAX), draw(st.sampled_from(tb.UNITS)), zone


@settings(max_examples=200)
@given(near_transitions())
def test_instants_next_to_dst_changes(case: tuple[int, str, str]) -> None:
    check(*case)


@pytest.mark.parametrize(("local", "zone", "unit"), [
    ("2024-03-10T02:30", "America/New_York", "hour"),  # skipped hour: no bucket of its own
    ("2024-11-03T01:30", "America/New_York", "hour"),  # repeated hour: one 2-hour bucket
    ("2016-10-16T00:30", "America/Sao_Paulo", "day"),  # midnight skipped: day starts at 01:00
    ("2011-12-31T12:00", "Pacific/Apia", "day"),  # the day after the skipped 30 December
    ("2024-04-07T02:15", "Australia/Lord_Howe", "hour"),  # 30-minute DST overlap
    ("2024-06-01T12:00", "Asia/Kathmandu", "hour"),  # +05:45: hours start at :15 UTC
])
def test_hand_picked_transitions(local: str, zone: str, unit: str) -> None:
    import datetime
    z = zoneinfo.ZoneInfo(zone)
    for fold in (0, 1):
        t = int(datetime.datetime.fromisoformat(local).replace(tzinfo=z, fold=fold).timestamp())
        check(t, unit, zone)


def test_new_york_days_and_weeks_by_hand() -> None:
    # 2024-03-10 is a Sunday with 23 hours in New York; its week began Monday 2024-03-04.
    t = 1710082800  # 2024-03-10 15:00 UTC = 11:00 EDT
    assert tb.bucket_starts(np.array([t]), "day", "America/New_York").tolist() == [1710046800]
    assert tb.bucket_starts(np.array([t]), "week", "America/New_York").tolist() == [1709528400]
    assert tb.bucket_starts(np.array([t]), "month", "America/New_York").tolist() == [1709269200]


def test_utc_minute_hour_day_are_the_old_truncations() -> None:
    t = np.array([0, 59, 60, 3599, 86399, 1_700_000_123, UINT32_MAX], np.int64)
    for unit, width in (("minute", 60), ("hour", 3600), ("day", 86400)):
        assert tb.bucket_starts(t, unit).tolist() == (t - t % width).tolist()


@settings(max_examples=60)
@given(lo=st.integers(0, UINT32_MAX), span=st.integers(0, 40 * 86400),
       unit=st.sampled_from(tb.UNITS), zone=st.sampled_from(INTERESTING))
def test_bucket_range_walks_the_local_calendar(lo: int, span: int, unit: str, zone: str) -> None:
    hi = min(lo + (span if unit not in ("minute", "hour") else span // 200), UINT32_MAX)
    got = tb.bucket_range(lo, hi, unit, zone).tolist()
    assert got == reference.bucket_range(lo, hi, unit, zone)
    assert len(got) <= tb.max_buckets(lo, hi, unit)


def test_unknown_zones() -> None:
    assert tb.is_zone("UTC") and tb.is_zone("Europe/Berlin")
    for bad in ("Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Europe", "a\0b"):
        assert not tb.is_zone(bad), bad
