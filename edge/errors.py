"""The one exception type a user sees: its message is a single line naming the file and what is wrong."""


class EdgeError(Exception):
    """Bad input or an unusable environment. The CLI prints the message on one line and exits non-zero."""
