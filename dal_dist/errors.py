"""The one exception type users see; its message names the file, row or field and what was expected."""


class DalDistError(Exception):
    """A user-facing error: bad input, bad config, or a state that must not be continued."""
