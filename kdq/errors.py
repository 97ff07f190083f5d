"""The two kinds of trouble a worker step can raise; the step machine (kdq/steps.py) sorts on them."""

from __future__ import annotations


class TransientError(RuntimeError):
    """Trouble that can pass (network, a busy service): the step waits and tries again."""


class PermanentError(RuntimeError):
    """Trouble that waiting will not fix (no credentials, a broken run): the stage fails with this text."""
