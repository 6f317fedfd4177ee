"""The errors a user can fix. The bottom layer: imports nothing from elt.

The CLI prints any :class:`UserError` as one line (``elt: error: …``) and exits with status 2; every
module raises these (or a subclass) for bad input instead of a bare ``ValueError``.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


class ConfigError(UserError, ValueError):
    """A configuration problem a user can fix; the message is one line naming the key and what is
    allowed."""


class CheckpointError(UserError, FileNotFoundError):
    """A checkpoint or run directory that is missing, incomplete or damaged."""
