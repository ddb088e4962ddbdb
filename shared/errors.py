"""User-facing errors: one sentence that names the problem and the fix."""


class CheckpointError(Exception):
    """Bad input or an impossible request; the message is meant for the user as is."""


class DatabaseLocationError(CheckpointError):
    """The SQLite file cannot be created or opened where it was asked for."""


class NothingToResume(CheckpointError):
    """A resume was asked for a thread that is unknown or has no pending work."""
