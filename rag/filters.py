"""Which articles a search may return: by source, publication date and doc_id.

A filter is applied inside retrieval (``Index.allowed_ids`` turns it into the chunk ids dense and BM25
search may score), so a filtered search still returns k results when k match, instead of the few
that survive cutting an unfiltered top k.

Dates compare as instants in UTC. A bound given as a date covers that whole day: ``published_after
2005-03-01`` keeps what was published from the first moment of 1 March, ``published_before 2005-03-31``
what was published until the last moment of 31 March. An article stored with a date only counts as
published at the start of its day (UTC). An article with no date never matches a date bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit

from rag.errors import UserError

MAX_VALUES = 1000  # doc_ids or sources in one filter
_DOMAIN = re.compile(r"(?:[a-z0-9-]+\.)+[a-z]{2,}(?::\d+)?(?:[/?#].*)?", re.I)


class BadFilter(UserError, ValueError):
    """A filter value that cannot be used (the message names the field and says what is expected)."""


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_instant(value: str, field: str, end_of_day: bool = False) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime (naive times are UTC).

    Args:
        end_of_day: a date-only value means the end of that day (for an inclusive upper bound).
    Raises:
        BadFilter: not ISO 8601.

    Example:
        >>> parse_instant("2005-03-14", "published_after")
        datetime.datetime(2005, 3, 14, 0, 0, tzinfo=datetime.timezone.utc)
    """
    text = value.strip()
    try:
        if _DATE_ONLY.match(text):
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(0), tzinfo=UTC)
            return start + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else start
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(f"{field}: {value!r} is not an ISO 8601 date (e.g. 2005-03-14 or "
                        f"2005-03-14T09:30:00+00:00)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def published_timestamp(published: str) -> float | None:
    """A stored ``published`` (ISO 8601, as ingest writes it) as UTC epoch seconds; None when absent or unreadable."""
    if not published:
        return None
    try:
        return parse_instant(published, "published").timestamp()
    except BadFilter:
        return None


def normalise_source(value: str) -> str:
    """A source as stored: a URL or bare domain becomes its lowercase host without ``www.`` or port;
    a name stays as written, trimmed.

    Example:
        >>> normalise_source("https://www.bbc.co.uk/news/x")
        'bbc.co.uk'
        >>> normalise_source("  BBC News ")
        'BBC News'
    """
    text = value.strip()
    if "://" not in text and not _DOMAIN.fullmatch(text):
        return text
    try:
        host = urlsplit(text if "://" in text else f"//{text}").hostname
    except ValueError:  # an unreadable port or IPv6 literal: not a URL after all
        return text
    return host.removeprefix("www.") if host else text


def source_key(value: str) -> str:
    """What two spellings of one source share: ``normalise_source`` without case.

    Example:
        >>> source_key("https://www.BBC.co.uk/news") == source_key("bbc.co.uk")
        True
    """
    return normalise_source(value).casefold()


@dataclass(frozen=True)
class Filters:
    """Restrictions on what retrieval may return; all given ones must hold (an empty one restricts nothing).

    Build from user input with ``Filters.parse``, which checks every value.
    """

    sources: tuple[str, ...] = ()
    published_after: datetime | None = None
    published_before: datetime | None = None
    doc_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sources or self.doc_ids or self.published_after or self.published_before)

    @classmethod
    def parse(cls, sources: list[str] | tuple[str, ...] | None = None, published_after: str | None = None,
              published_before: str | None = None, doc_ids: list[str] | tuple[str, ...] | None = None) -> Filters:
        """Filters from request or command-line values.

        Raises:
            BadFilter: a date that is not ISO 8601, ``published_after`` later than ``published_before``,
                or more than ``MAX_VALUES`` sources or doc_ids.
        """
        sources = tuple(s.strip() for s in sources or () if s and s.strip())
        doc_ids = tuple(d for d in doc_ids or () if d)
        for name, values in (("sources", sources), ("doc_ids", doc_ids)):
            if len(values) > MAX_VALUES:
                raise BadFilter(f"{name}: at most {MAX_VALUES} values, got {len(values)}")
        after = parse_instant(published_after, "published_after") if published_after else None
        before = parse_instant(published_before, "published_before", end_of_day=True) if published_before else None
        if after and before and after > before:
            raise BadFilter(f"published_after ({published_after}) is later than published_before ({published_before})")
        return cls(sources, after, before, doc_ids)

    def matches(self, doc_id: str, source: str, published: float | None) -> bool:
        """Whether an article passes (``published``: its UTC timestamp, ``published_timestamp``)."""
        if self.doc_ids and doc_id not in self.doc_ids:
            return False
        if self.sources and source_key(source) not in {source_key(s) for s in self.sources}:
            return False
        if self.published_after or self.published_before:
            if published is None:
                return False
            if self.published_after and published < self.published_after.timestamp():
                return False
            if self.published_before and published > self.published_before.timestamp():
                return False
        return True

    def describe(self) -> str:
        """The filter in words, for messages: ``source bbc.co.uk, published after 2005-03-01``."""
        parts = []
        if self.sources:
            parts.append("source " + " or ".join(self.sources))
        if self.published_after:
            parts.append(f"published after {self.published_after.isoformat()}")
        if self.published_before:
            parts.append(f"published before {self.published_before.isoformat()}")
        if self.doc_ids:
            parts.append(f"{len(self.doc_ids)} named article(s)" if len(self.doc_ids) > 3
                         else "article " + " or ".join(self.doc_ids))
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"sources": list(self.sources), "doc_ids": list(self.doc_ids),
                "published_after": self.published_after.isoformat() if self.published_after else None,
                "published_before": self.published_before.isoformat() if self.published_before else None}
