"""The base exception of calogen: every error a user can fix derives from :class:`CalogenError`."""

from __future__ import annotations

__all__ = ["CalogenError"]


class CalogenError(ValueError):
    """An input, file or setting is wrong; the message says which and how to fix it."""
