"""The errors radixsnn raises for problems with the caller's input (never for its own bugs).

Every one is a :class:`RadixSNNError`, so a script can catch them all at once; the command line prints
any of them as one line and exits with code 2. Messages name the offending *argument* (``lr``,
``time_steps``), not a command-line flag: the CLI turns the argument of a :class:`ConfigError` into its
flag (``--lr``) when it prints one.

>>> from radixsnn.errors import ConfigError, RadixSNNError
>>> err = ConfigError("time_steps", "must be in 1..16, got 0")
>>> str(err), err.argument, isinstance(err, ValueError), isinstance(err, RadixSNNError)
('time_steps must be in 1..16, got 0', 'time_steps', True, True)
"""
from __future__ import annotations


class RadixSNNError(Exception):
    """A problem with the user's input (file, model, data, option) rather than a bug."""


class ConfigError(RadixSNNError, ValueError):
    """An argument with a value radixsnn cannot use.

    ``argument`` names the parameter (``"lr"``, ``"time_steps"``) or is ``None`` when the problem is not
    one argument's; ``problem`` says what is wrong with it. ``str(error)`` is ``"<argument> <problem>"``.
    """

    def __init__(self, argument: str | None, problem: str):
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument} {problem}" if argument else problem)


class ConversionError(RadixSNNError):
    """The model contains something a radix SNN cannot represent (the message names the operation and node)."""


class DataError(RadixSNNError):
    """A dataset or data file cannot be found or read."""


class SNNFileError(RadixSNNError):
    """A ``.snn`` file cannot be read, or what it holds is not a valid radix SNN."""
