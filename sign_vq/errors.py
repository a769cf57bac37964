"""Errors that reach users as one clear line (exit status 2), never as a traceback."""


class UserError(Exception):
    """Bad input, configuration or environment: the message names the file or key and the fix."""


class BadPoseError(UserError):
    """A `.pose` file that cannot be used: the message names the file, what was found and what was expected."""
