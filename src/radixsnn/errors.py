"""The one exception type the command line turns into a clean error message."""


class RadixSNNError(Exception):
    """A problem with the user's input (file, model name, data, option) rather than a bug."""
