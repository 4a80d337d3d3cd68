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
