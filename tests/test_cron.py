"""Cron spec parsing and next-fire times (pure functions), and Go's text formats for option strings."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fastq._gofmt import format_duration, format_unix_date, option_strings, parse_duration, quote
from fastq.errors import CronSpecError, TimeZoneError
from fastq.scheduler.cron import load_zone, parse_cron

NY = load_zone("America/New_York")
UTC = timezone.utc


def fire_times(spec: str, start: datetime, n: int, location=UTC) -> list[datetime]:
    """The next ``n`` fire times after ``start``, as UTC datetimes."""
    schedule = parse_cron(spec)
    t = start.timestamp()
    out = []
    for _ in range(n):
        t = schedule.next_after(t, location)
        assert t == int(t), "fire times are whole seconds"
        out.append(datetime.fromtimestamp(t, UTC))
    return out


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_five_fields_in_utc():
    assert fire_times("*/15 9-10 * * mon-fri", utc(2026, 1, 2, 10, 40), 3) == [
        utc(2026, 1, 2, 10, 45), utc(2026, 1, 5, 9, 0), utc(2026, 1, 5, 9, 15)]  # Jan 2 2026 is a Friday


def test_a_time_exactly_on_a_tick_gives_the_next_one():
    assert fire_times("* * * * *", utc(2026, 1, 1, 12, 0), 1) == [utc(2026, 1, 1, 12, 1)]


@pytest.mark.parametrize("descriptor, expr", [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"), ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@hourly", "0 * * * *"),
])
def test_descriptors_fire_like_their_expression(descriptor, expr):
    start = utc(2026, 5, 17, 13, 27)
    assert fire_times(descriptor, start, 3) == fire_times(expr, start, 3)
    assert parse_cron(descriptor).identity() == parse_cron(expr).identity()


def test_daily_in_new_york_across_both_dst_changes():
    """9:00 local is 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT)."""
    spring = fire_times("0 9 * * *", datetime(2026, 3, 6, 12, tzinfo=NY), 3, location=NY)
    assert spring == [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]
    autumn = fire_times("0 9 * * *", datetime(2026, 10, 30, 12, tzinfo=NY), 3, location=NY)
    assert autumn == [utc(2026, 10, 31, 13), utc(2026, 11, 1, 14), utc(2026, 11, 2, 14)]


def test_a_time_skipped_by_spring_forward_does_not_run_that_day():
    """robfig/cron skips 02:30 on the day 02:00 jumps to 03:00 (croniter alone would run at 03:00)."""
    got = fire_times("30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=NY), 2, location=NY)
    assert [t.astimezone(NY).isoformat() for t in got] == ["2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]


def test_a_time_repeated_by_fall_back_runs_twice():
    """Like robfig/cron: 01:30 happens in EDT and again in EST."""
    got = fire_times("30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=NY), 3, location=NY)
    assert got == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6, 30)]


def test_hourly_across_spring_forward():
    got = fire_times("0 * * * *", datetime(2026, 3, 8, 0, 30, tzinfo=NY), 3, location=NY)
    assert [t.astimezone(NY).strftime("%H:%M%z") for t in got] == ["01:00-0500", "03:00-0400", "04:00-0400"]


@pytest.mark.parametrize("prefix", ["CRON_TZ", "TZ"])
def test_zone_prefix_overrides_the_location(prefix):
    spec = f"{prefix}=America/New_York 0 9 * * *"
    assert fire_times(spec, utc(2026, 1, 5), 1, location=load_zone("Asia/Tokyo")) == [utc(2026, 1, 5, 14)]
    assert parse_cron(spec).identity(UTC) == parse_cron("0 9 * * *").identity(NY)
    assert parse_cron(spec).identity(UTC) != parse_cron("0 9 * * *").identity(UTC)


def test_every_is_aligned_to_the_epoch():
    schedule = parse_cron("@every 30s")
    assert schedule.every == 30
    assert schedule.next_after(1_000_000_000.0) == 1_000_000_020.0
    assert schedule.next_after(1_000_000_020.0) == 1_000_000_050.0
    assert schedule.next_after(1_000_000_019.999) == 1_000_000_020.0
    assert parse_cron("@every 1h30m").every == 5400
    assert parse_cron("@every 1.5s").every == 1  # robfig truncates fractions of a second
    assert parse_cron("TZ=Europe/Paris @every 1m").identity(NY) == parse_cron("@every 60s").identity(UTC)


@pytest.mark.parametrize("spec, reason", [
    ("", "empty spec"),
    ("   ", "empty spec"),
    ("* * * *", "expected exactly 5 fields"),
    ("0 * * * * *", "expected exactly 5 fields"),  # robfig's standard parser has no seconds field
    ("61 * * * *", "out of range"),
    ("* 24 * * *", "out of range"),
    ("0 0 31 2 *", "never fires"),
    ("* * L * *", "bad day of month field"),
    ("* * * * 1#2", "bad day of week field"),
    ("* * * * funday", "bad day of week field"),
    ("@reboot", "unknown descriptor"),
    ("@every", "needs a duration"),
    ("@every 500ms", "at least 1s"),
    ("@every -5s", "at least 1s"),
    ("@every 10", "missing unit"),
    ("@every 1d", "unknown unit"),
    ("CRON_TZ=Mars/Olympus 0 9 * * *", "unknown time zone 'Mars/Olympus'"),
    ("TZ=America/New_York", "nothing follows the time zone prefix"),
])
def test_bad_specs_say_what_is_wrong(spec, reason):
    with pytest.raises(CronSpecError) as err:
        parse_cron(spec)
    assert reason in str(err.value)
    assert repr(spec) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_spec_must_be_a_string():
    with pytest.raises(CronSpecError, match="must be a str"):
        parse_cron(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../../etc/passwd", None, 5])
def test_bad_zones(name):
    with pytest.raises(TimeZoneError):
        load_zone(name)


# ---------------------------------------------------------------- Go text formats

@pytest.mark.parametrize("nanos, text", [
    (0, "0s"), (1, "1ns"), (1_500, "1.5\u00b5s"), (2_000_000, "2ms"), (1_500_000, "1.5ms"),
    (10**9, "1s"), (1_500_000_000, "1.5s"), (90 * 10**9, "1m30s"), (3600 * 10**9, "1h0m0s"),
    (86400 * 10**9, "24h0m0s"), (3661 * 10**9, "1h1m1s"), (-5 * 10**9, "-5s"),
])
def test_durations_print_as_go(nanos, text):
    assert format_duration(nanos) == text
    assert parse_duration(text) == nanos


@pytest.mark.parametrize("text", ["", ".", "s", "1", "1.5", "1x", "h1", "--1s", " 1s", "1s "])
def test_bad_go_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_quote_is_go_percent_q():
    assert quote("critical") == '"critical"'
    assert quote('a"b\\c\n\t\x01é') == '"a\\"b\\\\c\\n\\t\\x01é"'


def test_option_strings_are_what_go_stores_and_parses():
    deadline = datetime(2030, 1, 2, 15, 4, 5, tzinfo=load_zone("Europe/Paris"))
    opts = {"queue": "critical", "max_retry": 5, "timeout": 90, "deadline": deadline, "unique": timedelta(hours=1),
            "process_in": 10, "retention": 86400.0, "group": "g", "task_id": "t-1", "process_at": None}
    assert option_strings(opts) == [
        'Queue("critical")', "MaxRetry(5)", "Timeout(1m30s)", "Deadline(Wed Jan  2 14:04:05 UTC 2030)",
        "Unique(1h0m0s)", "ProcessIn(10s)", "Retention(24h0m0s)", 'Group("g")', 'TaskID("t-1")']
    assert format_unix_date(utc(2006, 1, 2, 15, 4, 5)) == "Mon Jan  2 15:04:05 UTC 2006"
