"""User-facing errors.

Anything a user can cause (bad data, bad config, bad arguments) raises a
``LeadmlError``. The CLI prints its message and exits non-zero without a
traceback; library callers can catch it. Programming errors stay ordinary
exceptions so that they keep their traceback.
"""

from __future__ import annotations


class LeadmlError(Exception):
    """An error the user can fix; ``str(err)`` says what and how."""

    exit_code = 2


class ConfigError(LeadmlError):
    """A configuration file, environment variable or flag is invalid."""


class DataError(LeadmlError):
    """Input tables are missing or violate their contract."""
