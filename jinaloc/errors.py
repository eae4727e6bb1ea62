"""The one exception type the CLI turns into a one-line error and exit code 2."""


class JinalocError(Exception):
    """A user-facing error: the message is shown as is, without a traceback."""


def check_choice(what: str, value: str, choices) -> str:
    """`value` if it is one of `choices`, else a one-line error listing them."""
    if value not in choices:
        raise JinalocError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    return value
