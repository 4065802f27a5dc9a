"""Training: float training and quantization-aware fine-tuning share one loop, checkpoint format and resume logic."""
from radixsnn.training.run import open_run
from radixsnn.training.runtime import Runtime, resolve_device, start_runtime, stop_runtime
from radixsnn.training.state import RunState, code_version, load_run, save_run
from radixsnn.training.trainer import TrainConfig, Trainer, learning_rate, normalize_pixels, pixels_as_float

__all__ = [
    "Runtime",
    "RunState",
    "TrainConfig",
    "Trainer",
    "code_version",
    "learning_rate",
    "load_run",
    "normalize_pixels",
    "open_run",
    "pixels_as_float",
    "resolve_device",
    "save_run",
    "start_runtime",
    "stop_runtime",
]
