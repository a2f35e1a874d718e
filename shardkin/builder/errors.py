"""The one error of a build."""


class BuildError(RuntimeError):
    """The build cannot go on; the message says what to do."""
