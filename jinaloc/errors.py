"""The one exception type the CLI turns into a one-line error and exit code 2."""


class JinalocError(Exception):
    """A user-facing error: the message is shown as is, without a traceback."""
