"""User-facing errors.

Every problem a user can fix (bad paths, bad shapes, bad options, bad data) is raised as
:class:`TfmedganError` with a one-line message. The CLI prints ``error: <message>`` and exits
with status 2 instead of showing a traceback.
"""


class TfmedganError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
