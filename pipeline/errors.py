"""Errors that the CLI turns into one-line messages and a non-zero exit code."""


class TolpipeError(Exception):
    """Base class: the message is shown to the user as it is, on one line."""

    exit_code = 2


class InputError(TolpipeError):
    """Malformed input: the message names the file (and row/column) and what was expected."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(TolpipeError):
    """A config file or --set override is invalid."""


class ParameterChangeError(TolpipeError):
    """Committed partitions were built with other parameters than the current config."""

    exit_code = 3


class StageFailure(TolpipeError):
    """One or more partitions raised; committed partitions stay committed."""

    exit_code = 1


class RootBusyError(TolpipeError):
    """Another run holds the work root (or the root's filesystem cannot lock)."""

    exit_code = 4


class RootNotWritableError(TolpipeError):
    """The work root (or a folder a run writes to) cannot be written."""

    def __init__(self, path: object, exc: OSError):
        reason = exc.strerror or type(exc).__name__
        super().__init__(
            f"{path}: not writable ({reason}); runs write manifests, the image store and the "
            "frozen config under the work root (status, show and audit only read)"
        )


class UpstreamError(TolpipeError):
    """A stage's upstream stage is empty, unfinished or stale."""

    exit_code = 3
