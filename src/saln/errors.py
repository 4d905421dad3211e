"""The error a user can act on: its message names the problem and the fix, so the command line
prints it without a traceback. Anything else that escapes is a bug, and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A refusal or failure caused by the input or the machine, not by saln's code."""


class InvalidInput(UserError, ValueError):
    """A value the caller passed (an argument, a setting, a file's content) that saln cannot use.
    A ``ValueError`` too, so that library callers catch it as Python's usual bad-argument error;
    a ``ValueError`` that is not one of these (from numpy, say) is a bug and keeps its traceback."""


class OutOfSpace(UserError, OSError):
    """A write that found the disk full; nothing half-written is left behind."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())
