"""The one error type of the data readers: bad input, reported with the file and what was expected.

The training scripts exit with code 2 on it (and on ``ConfigError`` and ``RunError``); any other
exception is a bug and crashes with its traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad data: the message names every bad file (variable, index) and what was expected."""


class MissingFileError(DataError, FileNotFoundError):
    """A data file that does not exist (or cannot be found where the config says)."""


class MissingVariableError(DataError, KeyError):
    """A data file without the variable the config names."""

    def __str__(self) -> str:  # the message, not KeyError's quoted repr
        return str(self.args[0]) if self.args else ""
