"""The one base class for errors a user can cause and fix (missing index, model, server, lock).

Each stage raises its own subclass, with a message that says what to do; the CLI prints any
``UserError`` as ``error: <message>`` with exit code 1 instead of a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to do about it."""
