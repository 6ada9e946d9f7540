"""User-facing errors.

Every problem a user can fix (a missing folder, a bad config key, an empty forget set) is raised as
:class:`UnlearnkitError` with a one-line message that names the problem and the fix. The CLI prints the message
and exits with status 2; nothing else is caught, so genuine bugs still show a traceback.
"""


class UnlearnkitError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""

    exit_code = 2
