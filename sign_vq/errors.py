"""Errors that reach users as one clear line (exit status 2), never as a traceback."""


class UserError(Exception):
    """Bad input, configuration or environment: the message names the file or key and the fix."""

    def __str__(self) -> str:
        # raised again by torch from a DataLoader worker, the message holds the worker's traceback: keep its last line
        text = super().__str__()
        if "Original Traceback" in text:
            text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
        return text


class BadPoseError(UserError):
    """A `.pose` file that cannot be used: the message names the file, what was found and what was expected."""
