"""The one exception type a user sees: its message is a single line naming the file and what is wrong."""


class EdgeError(Exception):
    """Bad input or an unusable environment. The CLI prints the message on one line and exits non-zero."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (a library's can run to pages), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
