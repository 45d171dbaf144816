"""Errors that reach the user: each says what is wrong, where, and how to fix it."""

from __future__ import annotations


class EcoscaleError(Exception):
    """Base class of every error ecoscale reports to its user."""


class UsageError(EcoscaleError):
    """The command line itself is wrong (a flag's value, a combination of flags): exit code 2.

    Every other EcoscaleError is a runtime error (a file not found, a window outside the
    trace, a cluster that does not answer): exit code 1.
    """


class InputError(EcoscaleError):
    """A user-supplied file or value is invalid.

    ``problems`` holds every problem found, so that a user fixes them all in one pass
    instead of one per run.
    """

    def __init__(self, source: str, problems: list[str] | str):
        self.source = source
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}:\n{lines}")
