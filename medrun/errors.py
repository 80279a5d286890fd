"""The one exception type for mistakes a user can fix (bad config, bad data, bad path)."""


class MedrunError(Exception):
    """A user-fixable problem; the CLI prints it as one line and exits with code 2."""
