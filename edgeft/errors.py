"""The one exception type for failures a user can cause.

Every such failure carries three parts (what went wrong, where, and what to do) so the CLI can
print one clear message and exit non-zero without a traceback, while API users can still catch
it as an ordinary exception.
"""

from __future__ import annotations


class EdgeftError(Exception):
    """A failure caused by the user's input or environment, not by a bug in edgeft."""

    exit_code = 1  # the CLI's exit status for it

    def __init__(self, what: str, where: str | None = None, hint: str | None = None) -> None:
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.message())

    def message(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"  where: {self.where}")
        if self.hint:
            parts.append(f"  what to do: {self.hint}")
        return "\n".join(parts)


class Interrupted(EdgeftError):
    """The user stopped the command (Ctrl-C); the message says what was kept and how to go on."""

    exit_code = 130  # 128 + SIGINT, what shells report for an interrupted command
