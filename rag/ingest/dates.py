"""An article's ``published`` value as ISO 8601 (its ``source`` is normalised by ``rag.filters.normalise_source``).

Dates are read by python-dateutil; this module only decides what dateutil may not guess:

- A date alone stays a date (``2005-03-14``); a time is kept to the second with its offset
  (``2005-03-14T09:30:00+01:00``). A time with no zone is in ``default_zone`` (UTC unless given),
  written with that zone's offset. Zone names: UTC/GMT/UT/Z and the US names RFC 2822 defines
  (EST, EDT, CST, CDT, MST, MDT, PST, PDT); any other name (BST, CET, …) is refused, not guessed.
- Day and month written as numbers that could be either ("03/04/2005") are refused as ambiguous
  unless ``dayfirst`` says how to read them; "13/04/2005" and "04/13/2005" can only be read one way,
  and a date that starts with its year ("2005/03/04") is always year, month, day.
- A value missing its year, month or day, or with a two-digit year, is refused: dateutil would fill
  the gap from today's date.
- A number (or a string of 9 to 11 digits) is epoch seconds, written in UTC. Under 10^8 it is refused
  (a year or a count far more often than a moment of 1966-1973), and so is one over 10^11
  (epoch milliseconds are not read: they would be a guess at the unit).
- Years outside 1800..2100 are refused as implausible.

A refusal is ``ParsedDate(None, reason)``: the caller reports it and stores no date. An empty value
is ``ParsedDate(None, "")``, no date and nothing to report.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, NamedTuple

from dateutil import parser as dateutil_parser

MIN_YEAR, MAX_YEAR = 1800, 2100
MAX_DATE_CHARS = 100  # longer is prose, not a date
EPOCH_MIN_ABS = 10**8  # seconds; 1973-03-03 (or 1966-10-31 before the epoch)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_TEXT = re.compile(r"-?\d{9,11}(\.\d+)?")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*")
_YEAR_FIRST = re.compile(r"\d{4}")  # 2005/03/04, 20050304: year, month, day (year, day, month is not in use)
# RFC 2822 section 4.3: the zone names a date header may carry, in hours from UTC.
_RFC2822_ZONES = {"UT": 0, "GMT": 0, "UTC": 0, "Z": 0, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
                  "MST": -7, "MDT": -6, "PST": -8, "PDT": -7}
# Two fillers that differ in every field: a field dateutil did not find differs between the two parses.
_FILL_A, _FILL_B = datetime(2000, 1, 1, 0, 0, 0), datetime(2001, 2, 2, 1, 1, 1)


class ParsedDate(NamedTuple):
    """A ``published`` value read: ``iso`` (ISO 8601) or None with ``reason`` ("" for an empty value)."""

    iso: str | None
    reason: str = ""


class _UnknownZone(Exception):
    """A zone name dateutil found and RFC 2822 does not define (not a ValueError: dateutil would rewrap it)."""


def _zone(name: str | None, offset: int | None) -> int | None:
    """dateutil's ``tzinfos`` hook: seconds east of UTC, or None for a time with no zone."""
    if offset is not None:
        return offset
    if name is None:
        return None
    if name.upper() in _RFC2822_ZONES:
        return _RFC2822_ZONES[name.upper()] * 3600
    raise _UnknownZone(name)


def _iso(moment: datetime | date, default_zone: tzinfo) -> ParsedDate:
    """``moment`` written as ISO 8601 (a naive time put in ``default_zone``), if its year is plausible."""
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        return ParsedDate(None, f"year {moment.year} is outside {MIN_YEAR}..{MAX_YEAR}")
    if not isinstance(moment, datetime):
        return ParsedDate(moment.isoformat())
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=default_zone)
    return ParsedDate(moment.isoformat(timespec="seconds"))


def _from_epoch(value: float | str) -> ParsedDate:
    seconds = float(value)
    if not math.isfinite(seconds) or abs(seconds) < EPOCH_MIN_ABS:
        return ParsedDate(None, f"not a date (a number is read as epoch seconds, and {value} is under 10^8)")
    if abs(seconds) > 10**11:  # past the year 5000 either way (and timedelta's range)
        return ParsedDate(None, f"not a date (a number is read as epoch seconds; {value} is too large: "
                                "milliseconds are not read)")
    return _iso(_EPOCH + timedelta(seconds=int(seconds)), UTC)


def _from_iso(text: str, default_zone: tzinfo) -> ParsedDate | None:
    """The strict ISO 8601 forms, without dateutil; None when ``text`` is not one of them."""
    try:
        if _ISO_DATE.fullmatch(text):
            return _iso(date.fromisoformat(text), default_zone)
        if _ISO_DATE_TIME.fullmatch(text):
            return _iso(datetime.fromisoformat(text), default_zone)
    except ValueError:
        return None  # dateutil says why
    return None


def _read(text: str, default: datetime, dayfirst: bool) -> datetime:
    return dateutil_parser.parse(text, default=default, dayfirst=dayfirst, tzinfos=_zone)


def _ambiguity(text: str, read: datetime) -> str:
    """Why ``read`` (month first) is a guess, or "": read day first, the text names another day."""
    try:
        other = _read(text, _FILL_A, dayfirst=True)
    except ValueError:
        return ""
    if other.date() == read.date():
        return ""
    return (f"ambiguous: {read.day} {read:%B} or {other.day} {other:%B}; write it as ISO 8601 "
            f"({read:%Y-%m-%d} or {other:%Y-%m-%d})")


def _from_text(text: str, default_zone: tzinfo, dayfirst: bool | None) -> ParsedDate:
    """Any other date dateutil reads, unless it had to fill in, or choose, a part of it."""
    if _YEAR_FIRST.match(text):
        dayfirst = False
    try:
        read = _read(text, _FILL_A, bool(dayfirst))
        other_fill = _read(text, _FILL_B, bool(dayfirst))
    except _UnknownZone as exc:
        return ParsedDate(None, f"unknown time zone {exc}: write it as an offset (+01:00)")
    except (ValueError, OverflowError) as exc:
        return ParsedDate(None, f"not a date ({str(exc).split(':')[0]})")
    missing = [name for name in ("year", "month", "day") if getattr(read, name) != getattr(other_fill, name)]
    if missing:
        return ParsedDate(None, f"no {'/'.join(missing)} given")
    if f"{read.year:04d}" not in text:
        return ParsedDate(None, "two-digit year: write all four digits")
    if dayfirst is None and (why := _ambiguity(text, read)):
        return ParsedDate(None, why)
    if read.hour != other_fill.hour:  # no time given: the date alone
        return _iso(read.date(), default_zone)
    return _iso(read, default_zone)


def parse_published(value: Any, default_zone: tzinfo = UTC, dayfirst: bool | None = None) -> ParsedDate:
    """Read a ``published`` value (text, epoch seconds, or a ``date``/``datetime``) as ISO 8601.

    Args:
        value: what the article carried: a front-matter field, an HTML metadata date, a JSON field
            (None or blank: no date).
        default_zone: the zone of a time written without one.
        dayfirst: how to read "03/04/2005": True for 3 April, False for March 4, None (the default)
            to refuse it as ambiguous.

    Returns:
        The ISO 8601 text, or None and why (``reason`` is "" when the value was empty).

    Example:
        >>> parse_published("Mon, 14 Mar 2005 09:30:00 GMT")
        ParsedDate(iso='2005-03-14T09:30:00+00:00', reason='')
        >>> parse_published("14 March 2005").iso
        '2005-03-14'
        >>> parse_published("03/04/2005").reason
        'ambiguous: 4 March or 3 April; write it as ISO 8601 (2005-03-04 or 2005-04-03)'
    """
    if value is None:
        return ParsedDate(None)
    if isinstance(value, date):  # a datetime too
        return _iso(value, default_zone)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return ParsedDate(None, f"not a date (a {type(value).__name__})")
    if not isinstance(value, str):
        return _from_epoch(value)
    text = value.strip()
    if not text:
        return ParsedDate(None)
    if len(text) > MAX_DATE_CHARS:
        return ParsedDate(None, f"not a date ({len(text)} characters)")
    if _EPOCH_TEXT.fullmatch(text):
        return _from_epoch(text)
    return _from_iso(text, default_zone) or _from_text(text, default_zone, dayfirst)
