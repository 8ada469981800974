"""The one base of medrl's own errors: the command line prints them as `error: ...` and exits 2.

A MedrlError is a mistake of the user's or an outside failure medrl can name; its message names the input
(setting, flag, file, URI) and the fix. Any other exception is a bug of medrl's and keeps its traceback.
"""


class MedrlError(Exception):
    """A user's mistake or an outside failure medrl can name; the message names the input and the fix."""
