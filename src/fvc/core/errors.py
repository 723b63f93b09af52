class FvcError(Exception):
    """A user-facing error: its message names the file or key that is wrong."""
