"""The base of every user-facing error: `fvc` prints its message as one line and exits 1."""

from __future__ import annotations


class FvcError(Exception):
    """Bad input, a missing file, a bad config key, a stage run too early, a job that cannot fit: the
    message names the file or key and what is wrong, in one line."""


class MissingInputError(FvcError, FileNotFoundError):
    """A stage's input does not exist yet; the message names the stage that makes it."""
