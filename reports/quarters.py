"""Calendar quarters of the city's local dates: parsing, bounds, the quarters a report compares with."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from citysafe.errors import ConfigurationError

_PATTERN = re.compile(r"(\d{4})-?[Qq]([1-4])")


class UnknownQuarter(ConfigurationError):
    """A quarter that is malformed or outside the data (exit 2)."""


@dataclasses.dataclass(frozen=True, order=True)
class Quarter:
    year: int
    q: int

    @classmethod
    def parse(cls, text: str) -> Quarter:
        m = _PATTERN.fullmatch((text or "").strip())
        if not m:
            raise UnknownQuarter(f"quarter {text!r}: write it as YYYYQn, e.g. 2025Q3")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, day: dt.date) -> Quarter:
        return cls(day.year, (day.month - 1) // 3 + 1)

    @property
    def label(self) -> str:
        return f"{self.year}Q{self.q}"

    @property
    def start(self) -> dt.date:
        return dt.date(self.year, 3 * self.q - 2, 1)

    @property
    def end(self) -> dt.date:
        """The last day of the quarter."""
        return self.next().start - dt.timedelta(days=1)

    def next(self) -> Quarter:
        return Quarter(self.year + (self.q == 4), self.q % 4 + 1)

    def previous(self) -> Quarter:
        return Quarter(self.year - (self.q == 1), (self.q - 2) % 4 + 1)

    def year_before(self) -> Quarter:
        return Quarter(self.year - 1, self.q)

    def __str__(self) -> str:
        return self.label


def latest_complete(first_day: dt.date, last_day: dt.date) -> Quarter:
    """The newest quarter that ended on or before the data's last day (and after its first)."""
    q = Quarter.of(last_day)
    if q.end > last_day:
        q = q.previous()
    if q.end < first_day:
        raise UnknownQuarter(f"the data ({first_day} to {last_day}) holds no complete quarter yet")
    return q
