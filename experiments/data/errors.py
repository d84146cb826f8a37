"""The one error type of the data readers: bad input, reported with the file and what was expected.

The training scripts exit with code 2 on it (and on the other ``ValueError``s of bad configuration).
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad data: the message names every bad file (variable, index) and what was expected."""
