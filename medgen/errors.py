"""The errors medgen raises on purpose. The CLI prints them as one line, never a traceback."""


class MedgenError(Exception):
    """Base class: a problem the user can fix, described in the message."""


class ConfigError(MedgenError):
    """A config file or override is wrong (unknown key, wrong type, bad value)."""


class DataError(MedgenError):
    """An input file or dataset is unusable. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class RunDirError(MedgenError):
    """A run or output directory cannot be used (exists, not writable, ...)."""
