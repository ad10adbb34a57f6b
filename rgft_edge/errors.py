"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class UserError(Exception):
    """Something the user can fix: bad flag, bad file, impossible budget."""


class DataError(UserError):
    """A data file or dataset that cannot be used as given."""


class ModelError(UserError):
    """A model directory that does not load or does not fit the task."""
