"""Deadlines in working days: Monday to Friday (public holidays are not modelled)."""

from __future__ import annotations

from datetime import date, timedelta


def add_working_days(start: date, days: int) -> date:
    """The day `days` working days after `start` (which itself does not count)."""
    day, left = start, days
    while left > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            left -= 1
    return day
