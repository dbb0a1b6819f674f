"""The one exception type users see; its message names the file, row or field and what was expected."""


class DalDistError(Exception):
    """A user-facing error: bad input, bad config, or a state that must not be continued."""


class StorageError(DalDistError, OSError):
    """A file operation failed (full disk, permissions): user-facing, and still an OSError so that the driver
    treats it as the storage fault it is (fix the cause, then `--resume`)."""
