"""The one exception every stage of resume raises when it cannot resume."""

from __future__ import annotations


class Refusal(Exception):
    """Resuming from this checkpoint cannot be right; the message is one sentence.

    `forceable` refusals are about correctness (--force overrides them); the others leave
    chkpt with no way to resume at all.
    """

    def __init__(self, message: str, forceable: bool = True) -> None:
        super().__init__(message)
        self.forceable = forceable
