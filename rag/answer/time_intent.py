"""What a question says about *when*: "the latest on…" prefers newer articles; "this week", "last month",
"yesterday" restrict to the articles published then; "in 2005", "in March 2005" prefer articles
published in that period (an article of 2006 may well tell what happened in 2005, so it is not excluded);
"before the election", "after the merger" name an event, not a date: the answer step dates it by the
article that best matches it and restricts to the articles published before or after that day.

Relative periods count back from ``now``: the ``RAG_NOW`` setting when given, otherwise the newest
article's date (an archive of 2005 asked about "this week" means its last week, not today's).
Calendar words (this month, last year) follow the calendar in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

LATEST = re.compile(r"\b(latest|most recent(ly)?|newest|recent(ly)?|lately|currently|these days|so far|"
                    r"up to date|as of now|right now)\b", re.I)
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december"]
_RELATIVE_WORDS = re.compile(r"\b(today|yesterday|week|month|year)\b", re.I)
# "before the election", "after the 2005 mayoral election": "the", up to three words, and a noun that names
# an event a news archive dates. Only such nouns: "before the committee", "after the break", "ahead of the
# favourite", "named after the mayor" are not events, and reading them as windows would hide the answer.
EVENT_NOUNS = ("election", "elections", "vote", "referendum", "poll", "ballot", "merger", "takeover",
               "acquisition", "buyout", "flotation", "ipo", "sale", "strike", "strikes", "storm", "flood", "floods",
               "earthquake", "hurricane", "budget", "summit", "ceasefire", "war", "invasion", "coup", "crash",
               "attack", "attacks", "bombing", "bombings", "resignation", "reshuffle", "inquiry", "trial",
               "verdict", "ruling", "launch", "opening", "closure", "bankruptcy", "bailout", "deal", "treaty",
               "tsunami", "olympics", "games", "world cup", "final", "scandal", "protests", "riots")
_EVENT = re.compile(r"\b(before|after|since|prior to|ahead of|following|until)\s+(the\s+(?:[\w'-]+\s+){0,3}?"
                    r"(" + "|".join(EVENT_NOUNS) + r"))\b", re.I)
_BEFORE = {"before", "prior to", "ahead of", "until"}
_PERIOD = re.compile(r"\b(?:in|during|of|from)\s+(?:(" + "|".join(_MONTHS) + r")\s+)?((?:18|19|20)\d{2})\b", re.I)


@dataclass(frozen=True)
class TimeIntent:
    """``window`` restricts what is searched; ``prefer`` ranks articles of that period first; ``latest``
    ranks newer articles first. All None/False: the question says nothing about time."""

    latest: bool = False
    window: tuple[datetime, datetime] | None = None
    prefer: tuple[datetime, datetime] | None = None
    phrase: str = ""
    content: str = ""  # the question without its words about publication time ("latest", "this week")
    event: str = ""    # "the election" of "before the election": dated by the answer step (``window`` then)
    event_noun: str = ""  # "election": what the dating article's title or text must name
    before_event: bool = False
    scored: str = ""   # what the answer selector reads when it differs from ``content`` ("Who was mayor?")

    def __bool__(self) -> bool:
        return bool(self.latest or self.window or self.prefer or self.event)

    def around(self, event_day: datetime) -> TimeIntent:
        """This intent restricted to the articles published before the event's day, or from it on (the
        article that reports an event appears on its day or after)."""
        day = _day(event_day)
        window = ((datetime(1800, 1, 1, tzinfo=UTC), day - timedelta(microseconds=1)) if self.before_event
                  else (day, datetime(2200, 1, 1, tzinfo=UTC)))
        return replace(self, window=window)


def _day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(year: int, month: int) -> datetime:
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=UTC)


def _relative(question: str, now: datetime) -> tuple[tuple[datetime, datetime], str] | None:
    """The publication window a relative period names, counted back from ``now``."""
    q = question.lower()
    end = now
    today = _day(now)
    rules = [
        (r"\btoday\b", (today, end)),
        (r"\byesterday\b", (today - timedelta(days=1), today - timedelta(microseconds=1))),
        (r"\b(this|the past|the last) week\b|\bin the past seven days\b", (now - timedelta(days=7), end)),
        (r"\blast week\b", (now - timedelta(days=14), now - timedelta(days=7))),
        (r"\bthis month\b", (_month_start(now.year, now.month), end)),
        (r"\blast month\b", (_month_start(now.year, now.month - 1),
                             _month_start(now.year, now.month) - timedelta(microseconds=1))),
        (r"\b(the past|the last) month\b", (now - timedelta(days=31), end)),
        (r"\bthis year\b", (datetime(now.year, 1, 1, tzinfo=UTC), end)),
        (r"\blast year\b", (datetime(now.year - 1, 1, 1, tzinfo=UTC),
                            datetime(now.year, 1, 1, tzinfo=UTC) - timedelta(microseconds=1))),
    ]
    for pattern, window in rules:
        match = re.search(pattern, q)
        if match:
            return window, match.group(0)
    return None


def read_time_intent(question: str, now: Callable[[], datetime | None]) -> TimeIntent:
    """What ``question`` asks about time. ``now`` gives the reference instant; it is called only for a
    question that names a relative period (None: such periods are ignored).

    Example:
        >>> read_time_intent("What is the latest on the strike?", lambda: None).latest
        True
        >>> read_time_intent("What happened in March 2005?", lambda: None).prefer[0].isoformat()
        '2005-03-01T00:00:00+00:00'
        >>> intent = read_time_intent("Who was mayor before the election?", lambda: None)
        >>> intent.event, intent.before_event, intent.content, intent.scored
        ('the election', True, 'Who was mayor the election?', 'Who was mayor?')
    """
    latest = bool(LATEST.search(question))
    content = _without(LATEST, question) if latest else question
    reference = now() if _RELATIVE_WORDS.search(question) else None
    if reference is not None:
        relative = _relative(question, reference)
        if relative:
            content = _without(re.compile(r"\b(in |during |from |over )?" + re.escape(relative[1]), re.I), content)
            return TimeIntent(latest=latest, window=relative[0], phrase=relative[1], content=content)
    event = _EVENT.search(question)
    if event:
        # Only the preposition goes: the event's words still say what the question is about.
        content = _without(re.compile(r"\b" + re.escape(event.group(1)) + r"\s+(?=" + re.escape(event.group(2)) + ")",
                                      re.I), content)
        scored = _without(re.compile(re.escape(event.group(0)), re.I), content.replace(event.group(2), event.group(0), 1))
        return TimeIntent(latest=latest, phrase=event.group(0), content=content, event=event.group(2),
                          event_noun=event.group(3).lower(), before_event=event.group(1).lower() in _BEFORE,
                          scored=scored)
    period = _PERIOD.search(question)
    if period:
        month, year = period.group(1), int(period.group(2))
        if month:
            m = _MONTHS.index(month.lower()) + 1
            span = (_month_start(year, m), _month_start(year, m + 1) - timedelta(microseconds=1))
        else:
            span = (datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC) - timedelta(microseconds=1))
        # Retrieval keeps "in March 2005" (an article of April may say "in March"); the selector and the check
        # that the question's names and numbers occur in the passages do not: "March" is when, not what.
        scored = _without(re.compile(r"\b(?:according to \w+ )?" + re.escape(period.group(0)), re.I), content)
        return TimeIntent(latest=latest, prefer=span, phrase=period.group(0), content=content, scored=scored)
    return TimeIntent(latest=latest, phrase=LATEST.search(question).group(0) if latest else "", content=content)


def _without(pattern: re.Pattern, question: str) -> str:
    """``question`` with ``pattern``'s matches cut out: they say when the article was published, not what
    it says, and the answer selector reads them as words the answer sentence should hold."""
    text = re.sub(r"\s{2,}", " ", pattern.sub("", question))
    return re.sub(r"\s+([?.!,])", r"\1", text).strip() or question
