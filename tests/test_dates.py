"""``published`` read as ISO 8601 (rag.ingest.dates) and ``source`` normalised (rag.filters): exact outputs, every refusal."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from rag.filters import normalise_source
from rag.ingest.dates import ParsedDate, parse_published


class TestFormats:
    @pytest.mark.parametrize(("value", "iso"), [
        ("2005-03-14", "2005-03-14"),
        ("2005-03-14T09:30:00+01:00", "2005-03-14T09:30:00+01:00"),
        ("2005-03-14T09:30:00Z", "2005-03-14T09:30:00+00:00"),
        ("2005-03-14T09:30:00.123456-05:00", "2005-03-14T09:30:00-05:00"),
        ("Mon, 14 Mar 2005 09:30:00 GMT", "2005-03-14T09:30:00+00:00"),
        ("Mon, 14 Mar 2005 09:30:00 +0100", "2005-03-14T09:30:00+01:00"),
        ("Mon, 14 Mar 2005 09:30:00 EST", "2005-03-14T09:30:00-05:00"),
        ("14 March 2005", "2005-03-14"),
        ("March 14, 2005", "2005-03-14"),
        ("Monday, March 14, 2005", "2005-03-14"),
        ("March 14, 2005 at 9:30 pm", "2005-03-14T21:30:00+00:00"),
        ("2005/03/14", "2005-03-14"),
        ("14.03.2005", "2005-03-14"),
        ("20050314", "2005-03-14"),
        ("  2005-03-14  ", "2005-03-14"),
    ])
    def test_common_formats_give_exact_iso(self, value: str, iso: str):
        assert parse_published(value) == ParsedDate(iso, "")

    @pytest.mark.parametrize("value", [1110792600, 1110792600.75, "1110792600"])
    def test_epoch_seconds_are_utc(self, value):
        assert parse_published(value).iso == "2005-03-14T09:30:00+00:00"

    def test_yaml_date_and_datetime_values(self):
        assert parse_published(date(2005, 3, 14)).iso == "2005-03-14"
        aware = datetime(2005, 3, 14, 9, 30, tzinfo=timezone(timedelta(hours=1)))
        assert parse_published(aware).iso == "2005-03-14T09:30:00+01:00"
        assert parse_published(datetime(2005, 3, 14, 9, 30)).iso == "2005-03-14T09:30:00+00:00"


class TestTimezones:
    def test_a_date_alone_gets_no_time_or_zone(self):
        assert parse_published("14 March 2005", default_zone=ZoneInfo("Asia/Phnom_Penh")).iso == "2005-03-14"

    @pytest.mark.parametrize(("value", "zone", "iso"), [
        ("2005-03-14 09:30", UTC, "2005-03-14T09:30:00+00:00"),
        ("2005-03-14 09:30", ZoneInfo("Asia/Phnom_Penh"), "2005-03-14T09:30:00+07:00"),
        ("14 July 2005 09:30", ZoneInfo("Europe/London"), "2005-07-14T09:30:00+01:00"),  # summer time
        ("14 January 2005 09:30", ZoneInfo("Europe/London"), "2005-01-14T09:30:00+00:00"),
        (datetime(2005, 3, 14, 9, 30), ZoneInfo("America/New_York"), "2005-03-14T09:30:00-05:00"),
    ])
    def test_a_time_without_a_zone_is_in_the_default_zone(self, value, zone, iso: str):
        assert parse_published(value, default_zone=zone).iso == iso

    def test_a_given_offset_is_kept_whatever_the_default_zone(self):
        assert parse_published("2005-03-14T09:30:00+05:30", default_zone=ZoneInfo("Europe/London")).iso == \
            "2005-03-14T09:30:00+05:30"

    def test_a_zone_name_rfc_2822_does_not_define_is_refused(self):
        assert parse_published("14 March 2005 09:30 BST") == \
            ParsedDate(None, "unknown time zone BST: write it as an offset (+01:00)")


class TestAmbiguousDayAndMonth:
    def test_refused_by_default(self):
        assert parse_published("03/04/2005") == ParsedDate(
            None, "ambiguous: 4 March or 3 April; write it as ISO 8601 (2005-03-04 or 2005-04-03)")

    @pytest.mark.parametrize(("dayfirst", "iso"), [(True, "2005-04-03"), (False, "2005-03-04")])
    def test_read_as_told(self, dayfirst: bool, iso: str):
        assert parse_published("03/04/2005", dayfirst=dayfirst).iso == iso

    @pytest.mark.parametrize(("value", "iso"), [
        ("13/04/2005", "2005-04-13"), ("04/13/2005", "2005-04-13"), ("04/04/2005", "2005-04-04"),
        ("2005/03/04", "2005-03-04"),  # year first: always year, month, day
    ])
    def test_only_one_reading_is_not_ambiguous(self, value: str, iso: str):
        assert parse_published(value).iso == iso
        assert parse_published(value, dayfirst=True).iso == iso


class TestRefusals:
    @pytest.mark.parametrize("value", [None, "", "   "])
    def test_empty_is_no_date_and_nothing_to_report(self, value):
        assert parse_published(value) == ParsedDate(None, "")

    @pytest.mark.parametrize(("value", "reason"), [
        ("yesterday-ish", "not a date (Unknown string format)"),
        ("32/13/2005", "not a date (month must be in 1..12)"),
        ("2024-02-30", "not a date (day is out of range for month)"),
        ("2005-03-14T25:00", "not a date (hour must be in 0..23)"),
        ("1700-01-01", "year 1700 is outside 1800..2100"),
        ("2101-06-01", "year 2101 is outside 1800..2100"),
        (date(1799, 12, 31), "year 1799 is outside 1800..2100"),
        # dateutil would fill what is missing from today's date, or guess the century:
        ("14 March", "no year given"),
        ("March 2005", "no day given"),
        ("2005", "no month/day given"),
        ("12:30", "no year/month/day given"),
        ("14 Mar 05", "two-digit year: write all four digits"),
        (2005, "not a date (a number is read as epoch seconds, and 2005 is under 10^8)"),
        (1110792600000, "not a date (a number is read as epoch seconds; 1110792600000 is too large: "
                        "milliseconds are not read)"),
        (True, "not a date (a bool)"),
        (["2005-03-14"], "not a date (a list)"),
        ("x" * 101, "not a date (101 characters)"),
    ])
    def test_refused_with_the_reason_never_guessed(self, value, reason: str):
        assert parse_published(value) == ParsedDate(None, reason)

    def test_never_today(self):
        today = date.today().isoformat()
        for value in ("14 March", "March", "12:30", "Monday"):
            assert parse_published(value).iso is None and today not in parse_published(value).reason


class TestNormaliseSource:
    @pytest.mark.parametrize(("value", "source"), [
        ("https://www.bbc.co.uk/news/x", "bbc.co.uk"),
        ("http://WWW.Reuters.com:443/article?id=1", "reuters.com"),
        ("www.bbc.co.uk", "bbc.co.uk"),
        ("bbc.co.uk/news/world", "bbc.co.uk"),
        ("https://news.bbc.co.uk/", "news.bbc.co.uk"),
        ("BBC News", "BBC News"),
        ("  Reuters \n", "Reuters"),
        ("bundled demo corpus (original file 000.txt)", "bundled demo corpus (original file 000.txt)"),
        ("", ""),
    ])
    def test_a_url_becomes_its_domain_and_a_name_stays(self, value: str, source: str):
        assert normalise_source(value) == source
