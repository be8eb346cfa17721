"""The package's own errors: the mistakes a user can make (chapter "Saving and loading").

Every error that a user's input can cause (a bad setting, a missing or damaged file, a device
that is not there) is a :class:`UserError`: the command line prints its message as one line and
exits with status 2. Any other exception is a bug in the package and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user gave; the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A setting out of range, or one that cannot go with the others."""


class CheckpointError(UserError, RuntimeError):
    """A file that cannot be used as a checkpoint; the message names it and says why."""
