"""Training: float training and quantization-aware fine-tuning share one loop, checkpoint format and resume logic.

================  ====================================================================
``trainer``       :class:`Trainer` (SGD, schedules, AMP, DDP, distillation), :class:`TrainConfig`
``qat``           :func:`finetune` (a QANN, any loader) and :func:`finetune_run` (the whole run)
``float_run``     :func:`train_run`: a registered float model trained from scratch
``run``           output folders: start or resume a run; its data loaders
``state``         checkpoints (safetensors + JSON metadata), written atomically
``runtime``       the device and the torchrun process group
================  ====================================================================
"""
from radixsnn.training.float_run import TRAIN_DEFAULTS, train_run
from radixsnn.training.qat import FINETUNE_DEFAULTS, default_lr, finetune, finetune_run, float_teacher
from radixsnn.training.run import make_loaders, open_run
from radixsnn.training.runtime import Runtime, resolve_device, run_in_group, start_runtime, stop_runtime
from radixsnn.training.state import RunState, code_version, load_run, save_run
from radixsnn.training.trainer import TrainConfig, Trainer, learning_rate, pixels_as_float, training_loss

__all__ = [
    "FINETUNE_DEFAULTS",
    "Runtime",
    "RunState",
    "TRAIN_DEFAULTS",
    "TrainConfig",
    "Trainer",
    "code_version",
    "default_lr",
    "finetune",
    "finetune_run",
    "float_teacher",
    "learning_rate",
    "load_run",
    "make_loaders",
    "open_run",
    "pixels_as_float",
    "resolve_device",
    "run_in_group",
    "save_run",
    "start_runtime",
    "stop_runtime",
    "train_run",
    "training_loss",
]
