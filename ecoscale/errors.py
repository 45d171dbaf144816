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


EXIT_RUNTIME = 1
"""An EcoscaleError other than UsageError: a file not found or invalid, a window outside the
trace, a cluster that does not answer."""
EXIT_USAGE = 2
"""argparse's errors and UsageError: the command line itself is wrong."""

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  runtime error: a file not found or invalid, a window outside the trace, a cluster or
     service that does not answer
  2  usage error: an unknown flag, a bad flag value or combination (see --help)"""


def exit_codes_help(*extra: str) -> str:
    """The exit-code epilog of a command's --help, with command-specific lines."""
    return EXIT_CODES_HELP + "".join(f"\n{line}" for line in extra)
