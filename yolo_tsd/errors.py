"""The one kind of error a user's input raises: its message names the problem and the fix.

The command line prints it as one line and exits with status 2 (no traceback unless ``TSD_DEBUG=1``); from Python it is
an ordinary ``ValueError`` (``MissingFileError`` also a ``FileNotFoundError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class UsageError(ValueError):
    """A problem with the arguments, settings or input files; the message says what to change."""


class MissingFileError(UsageError, FileNotFoundError):
    """An input file that is not where the arguments say."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid spelling, or an empty string."""
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
