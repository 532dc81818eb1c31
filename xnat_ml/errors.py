"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class XnatMlError(Exception):
    """A user-facing failure: the message names the object and the problem in one sentence."""
