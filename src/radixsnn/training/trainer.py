"""The training loop shared by float training (``radixsnn train``) and quantization-aware
fine-tuning (``radixsnn finetune``): SGD with momentum, a step or cosine learning-rate schedule,
optional autocast, DistributedDataParallel under ``torchrun``, an evaluation on the test split
after every epoch (or every ``eval_every``-th and the last), and a checkpoint (``last`` and
``best``) plus a ``metrics.jsonl`` line per epoch.

Everything random in an epoch -- data order, augmentation, dropout -- is seeded from
``(seed, epoch, rank)`` and the learning rate is a function of the position in the run, so a run
resumed from the checkpoint of epoch ``e`` continues exactly as the uninterrupted run did.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from radixsnn.data.loader import DeviceLoader, derive_seed
from radixsnn.errors import ConfigError
from radixsnn.training.runtime import AMP_DTYPES, Runtime, check_amp
from radixsnn.outputs import write_text
from radixsnn.training.state import RunState, code_version, save_run

SCHEDULES = ("step", "cosine", "constant")


@dataclass
class TrainConfig:
    """Optimisation settings; stored in every checkpoint."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    step_epochs: int = 30
    label_smoothing: float = 0.0
    seed: int = 0
    limit_batches: int | None = None
    clip_grad: float | None = None
    distill: float = 0.0
    distill_temperature: float = 1.0
    max_steps: int | None = None
    mixup: float = 0.0
    ema: float = 0.0
    scale_lr: float = 1.0
    warmup_epochs: float = 0.0
    nesterov: bool = False
    eval_every: int = 1

    def __post_init__(self):
        checks = [
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "must be positive"),
            ("momentum", 0 <= self.momentum < 1, "must lie in [0, 1)"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "must not be negative"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}"),
            ("step_epochs", self.step_epochs >= 1, "must be at least 1"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must lie in [0, 1)"),
            ("mixup", math.isfinite(self.mixup) and self.mixup >= 0, "must not be negative"),
            ("ema", 0 <= self.ema < 1, "must lie in [0, 1)"),
            ("scale_lr", math.isfinite(self.scale_lr) and self.scale_lr > 0, "must be positive"),
            ("warmup_epochs", math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs < self.epochs,
             f"must lie in [0, epochs = {self.epochs})"),
            ("nesterov", not self.nesterov or self.momentum > 0, "needs a momentum above 0"),
            ("eval_every", self.eval_every >= 1, "must be at least 1"),
            ("clip_grad", self.clip_grad is None or (math.isfinite(self.clip_grad) and self.clip_grad >= 0), "must not be negative"),
            ("distill", 0 <= self.distill <= 1, "must lie in [0, 1]"),
            ("distill_temperature", math.isfinite(self.distill_temperature) and self.distill_temperature > 0, "must be positive"),
            ("limit_batches", self.limit_batches is None or self.limit_batches >= 1, "must be at least 1"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, "must be at least 1"),
        ]
        for name, ok, problem in checks:
            if not ok:
                raise ConfigError(name, f"{problem}, got {getattr(self, name)!r}")


def learning_rate(config: TrainConfig, epoch: int, progress: float = 0.0, total_epochs: float | None = None) -> float:
    """The learning rate at ``progress`` (0..1) through epoch ``epoch`` (0-based).

    With ``warmup_epochs`` = W > 0 the rate rises linearly from 0 to the base rate over the first W
    epochs and the schedule runs over the rest of the run, as if it started at W.
    ``step``: the base rate halved every ``step_epochs`` epochs (the paper's schedule).
    ``cosine``: half a cosine from the base rate to 0 over the run (``total_epochs``, default
    ``config.epochs``), updated every step. ``constant``: the base rate throughout.

    >>> config = TrainConfig(epochs=10, lr=0.1, schedule="cosine", warmup_epochs=2)
    >>> [round(learning_rate(config, e), 4) for e in (0, 1, 2, 6, 9)]
    [0.0, 0.05, 0.1, 0.05, 0.0038]
    """
    position = epoch + progress
    warmup = config.warmup_epochs
    if position < warmup:
        return config.lr * position / warmup
    position -= warmup
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr * 0.5 ** (int(position) // config.step_epochs)
    total = (total_epochs or config.epochs) - warmup
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(1.0, position / total)))


def training_loss(
    logits: torch.Tensor, labels: torch.Tensor, config: TrainConfig, teacher_logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy (with ``label_smoothing``), mixed with knowledge distillation when ``distill > 0``:

    ``(1 - d) CE(logits, labels) + d tau^2 KL(softmax(teacher_logits / tau) || softmax(logits / tau))``

    (with mixup, the trainer mixes two such losses, one per label of the blended pair, by ``lam``)

    with ``d = config.distill`` and ``tau = config.distill_temperature``: the student (the QANN) learns the
    teacher's (its own float network's) whole output distribution, not only the label -- the usual remedy for
    the coarse gradients of very low-bit activations. A temperature above 1 softens both distributions, so
    the teacher's ranking of the wrong classes still teaches on images it has memorized (where its softmax
    is nearly one-hot); the ``tau^2`` factor keeps the gradient's size independent of ``tau`` (Hinton et al.).
    """
    d = config.distill
    ce = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing) if d < 1 else 0.0
    if d == 0:
        return ce
    if teacher_logits is None:
        raise ConfigError("teacher_logits", "are needed for distillation (distill > 0)")
    tau = config.distill_temperature
    kl = F.kl_div(F.log_softmax(logits / tau, dim=1), F.log_softmax(teacher_logits.float() / tau, dim=1),
                  reduction="batchmean", log_target=True)
    return (1 - d) * ce + d * tau**2 * kl


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups: every trainable parameter at the base rate, except activation
    scales (parameters named ``scales.*``, a QANN's LSQ step sizes), which learn at ``config.scale_lr``
    times the base rate and without weight decay (decaying a quantizer's step size only pushes it to
    clip). ``lr_scale`` is each group's multiple of the scheduled rate.
    """
    rest, scales = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (scales if name.startswith("scales.") else rest).append(p)
    groups = [{"params": rest, "lr_scale": 1.0}]
    if scales:
        groups.append({"params": scales, "lr_scale": config.scale_lr, "weight_decay": 0.0})
    return groups


def pixels_as_float(x: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 as float32: the input of a QANN (normalization is folded inside)."""
    return x.float()


class Trainer:
    """Train ``model`` on ``train_loader``, evaluate on ``test_loader`` and checkpoint into ``out_dir``.

    ``preprocess`` turns a uint8 batch into the model's input; ``meta`` (model name, dataset, ...)
    is stored in every checkpoint next to the config and the training state. ``amp`` is ``None``,
    ``"bf16"`` (CUDA, or a CPU: autocast of the training passes, evaluation in float32 there) or
    ``"fp16"`` (CUDA only, with loss scaling); it is recorded in ``meta["amp"]``. ``teacher`` (needed
    when ``config.distill > 0``) maps the same uint8 batch to the logits the model learns to match (see :func:`training_loss`).
    Without ``test_loader`` no epoch is evaluated; without ``out_dir`` nothing is written.
    With ``config.max_steps`` the run stops after that many optimizer steps (its last epoch cut short)
    and the cosine schedule spans them. With ``config.ema`` = d > 0 the trainer keeps an exponential
    moving average of the model's state, ``a <- d a + (1 - d) w`` after every step (d ramps up as
    ``min(d, (1 + n) / (10 + n))`` over the first steps n): every evaluation, the ``best`` checkpoint
    and the model's own keys in ``last`` hold the average, and :meth:`fit` leaves it in the model.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        runtime: Runtime,
        out_dir: Path | None,
        *,
        train_loader: DeviceLoader,
        test_loader: DeviceLoader | None,
        preprocess: Callable[[torch.Tensor], torch.Tensor],
        meta: dict,
        amp: str | None = None,
        channels_last: bool = False,
        progress: bool = True,
        teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress_lines: bool = True,
    ):
        check_amp(amp, runtime.device)
        if config.distill > 0 and teacher is None:
            raise ConfigError("distill", "needs a teacher network")
        self.config = config
        self.teacher = teacher if config.distill > 0 else None
        self.runtime = runtime
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.train_loader = train_loader
        self.test_loader = test_loader
        self.preprocess = preprocess
        self.meta = meta
        self.meta["amp"] = amp
        self.amp = amp
        self.channels_last = channels_last
        self.progress = progress and runtime.is_main
        self.progress_lines = progress_lines
        self.model = model.to(runtime.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = self.model
        if runtime.distributed:
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = torch.optim.SGD(
            parameter_groups(self.model, config), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, nesterov=config.nesterov,
        )
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        self.start_epoch = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.steps_done = 0
        self.average = self._state_copy() if config.ema else None
        self.epochs = config.epochs
        if config.max_steps is not None:
            self.epochs = math.ceil(config.max_steps / len(train_loader))

    # ------------------------------------------------------------------ state
    def restore(self, state: RunState) -> None:
        """Continue from a checkpoint: model weights, optimizer state, epoch, history, best."""
        if state.optimizer_state is None:
            raise ConfigError("state", "holds no optimizer state (a best.* file?): resume from last.*")
        if self.average is not None and state.training_state is None:
            raise ConfigError("state", "holds no trained weights beside the average (saved without --ema?)")
        try:
            self.model.load_state_dict(state.model_state)
            if self.average is not None:  # the file's model keys hold the average
                self.average = self._state_copy()
                self.model.load_state_dict(state.training_state)
            self.optimizer.load_state_dict(state.optimizer_state)
            if self.scaler is not None and state.meta.get("scaler"):
                self.scaler.load_state_dict(state.meta["scaler"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError("state", f"does not fit this run's model ({' '.join(str(exc).split())[:300]})") from None
        self.start_epoch = int(state.meta["epoch"])
        self.steps_done = int(state.meta.get("steps", self.start_epoch * len(self.train_loader)))
        self.history = list(state.meta.get("history", []))
        self.best = state.meta.get("best")

    def _meta(self, epoch: int) -> dict:
        return {
            **self.meta,
            "code": code_version(),
            "epoch": epoch,
            "epochs": self.epochs,
            "steps": self.steps_done,
            "metrics": self.history[-1] if self.history else None,
            "history": self.history,
            "best": self.best,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def _save(self, epoch: int, improved: bool) -> None:
        if not self.runtime.is_main or self.out_dir is None:
            return
        meta = self._meta(epoch)
        model_state = self.model.state_dict() if self.average is None else self.average
        training_state = None if self.average is None else self.model.state_dict()
        save_run(self.out_dir / "last", model_state, meta, self.optimizer.state_dict(), training_state)
        if improved:
            save_run(self.out_dir / "best", model_state, meta, None)
        lines = "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.history)
        write_text(self.out_dir / "metrics.jsonl", lines, "out")

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict | None:
        """Run the remaining epochs; returns the last epoch's metrics (``None`` if none ran)."""
        for epoch in range(self.start_epoch, self.epochs):
            start = time.perf_counter()
            train = self.train_epoch(epoch)
            train["train_seconds"] = round(time.perf_counter() - start, 3)
            evaluated = self.test_loader is not None and (
                (epoch + 1) % self.config.eval_every == 0 or epoch + 1 == self.epochs)
            test = self.evaluate() if evaluated else {}
            metrics = {
                "epoch": epoch + 1,
                "lr": learning_rate(self.config, epoch, total_epochs=self._schedule_epochs()),
                **train,
                **test,
                "seconds": round(time.perf_counter() - start, 3),
            }
            self.history.append(metrics)
            # the best epoch by test accuracy, among the evaluated ones (by training accuracy without a test loader)
            score = train["train_acc"] if self.test_loader is None else test.get("test_acc")
            improved = score is not None and (self.best is None or score > self.best["test_acc"])
            if improved:
                self.best = {"epoch": epoch + 1, "test_acc": score}
            self._save(epoch + 1, improved)
            if self.runtime.is_main and self.progress_lines:
                line = (f"epoch {epoch + 1}/{self.epochs}  lr {metrics['lr']:.4g}  "
                        f"train loss {train['train_loss']:.4f} acc {train['train_acc']:.2f}%")
                if test:
                    line += f"  test loss {test['test_loss']:.4f} acc {test['test_acc']:.2f}%"
                tqdm.write(line + f"  ({metrics['seconds']:.1f} s)")
        self.runtime.barrier()
        if self.average is not None:
            self.model.load_state_dict(self.average)
        return self.history[-1] if self.history else None

    # ------------------------------------------------------------------ weight average
    def _state_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def _update_average(self) -> None:
        decay = min(self.config.ema, (1 + self.steps_done) / (10 + self.steps_done))
        for key, value in self.model.state_dict().items():
            if value.is_floating_point():
                self.average[key].lerp_(value, 1 - decay)
            else:
                self.average[key].copy_(value)

    @contextmanager
    def _averaged(self):
        """The weight average in the model for the block (nothing changes without ``config.ema``)."""
        if self.average is None:
            yield
            return
        trained = self._state_copy()
        self.model.load_state_dict(self.average)
        try:
            yield
        finally:
            self.model.load_state_dict(trained)

    def _schedule_epochs(self) -> float:
        """Length of the learning-rate schedule in epochs (fractional under ``max_steps``)."""
        if self.config.max_steps is not None:
            return self.config.max_steps / len(self.train_loader)
        return self.config.epochs

    def _autocast(self, evaluation: bool = False):
        """Autocast for the training passes; on the CPU evaluation stays float32 (exact reported accuracy)."""
        if self.amp is None or (evaluation and self.runtime.device.type != "cuda"):
            return nullcontext()
        return torch.autocast(device_type=self.runtime.device.type, dtype=AMP_DTYPES[self.amp])

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_epoch(self, epoch: int) -> dict:
        """One pass over this rank's shard; returns the mean loss and accuracy over all ranks."""
        torch.manual_seed(derive_seed(self.config.seed, "epoch", epoch, self.runtime.rank))
        self.train_loader.set_epoch(epoch)
        self.net.train()
        steps = len(self.train_loader)
        device = self.runtime.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        if self.config.max_steps is not None:
            steps = min(steps, self.config.max_steps - self.steps_done)
        bar = tqdm(
            self.train_loader, total=steps, desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=not self.progress, leave=False, unit="batch",
        )
        per_epoch = len(self.train_loader)
        for step, (images, labels) in enumerate(bar):
            if step >= steps:
                break
            lr = learning_rate(self.config, epoch, step / per_epoch, self._schedule_epochs())
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            images, partner, lam = self._mix(images)
            with self._autocast():
                teacher_logits = None
                if self.teacher is not None:
                    with torch.no_grad():
                        teacher_logits = self.teacher(images)
                logits = self.net(self._inputs(images))
                loss = training_loss(logits.float(), labels, self.config, teacher_logits)
                if partner is not None:
                    loss = lam * loss + (1 - lam) * training_loss(logits.float(), labels[partner], self.config, teacher_logits)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self._clip_gradients()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self._clip_gradients()
                self.optimizer.step()
            if self.average is not None:
                self._update_average()
            self.steps_done += 1
            n = labels.numel()
            loss_sum += loss.detach().double() * n
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += n
            if self.progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}")
        total_loss, total_correct, total = self.runtime.all_reduce_sum([loss_sum.item(), correct.item(), seen])
        if not math.isfinite(total_loss):
            raise ConfigError("lr", f"{self.config.lr} made training diverge in epoch {epoch + 1} (loss {total_loss}); try a lower one")
        return {"train_loss": total_loss / total, "train_acc": 100.0 * total_correct / total, "train_images": int(total)}

    def _mix(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Mixup (``config.mixup`` = alpha > 0): each image blended with a partner of the same batch,
        ``lam x + (1 - lam) x[partner]`` with ``lam ~ Beta(alpha, alpha)``, as float pixels 0..255;
        returns ``(images, partner, lam)`` (``partner`` ``None`` without mixup)."""
        if not self.config.mixup:
            return images, None, 1.0
        alpha = torch.tensor(float(self.config.mixup))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = torch.randperm(len(images), device=images.device)
        return images.float() * lam + images[partner].float() * (1 - lam), partner, lam

    def _clip_gradients(self) -> None:
        """Scale the gradients down to global L2 norm ``clip_grad`` when they exceed it (0/None: off)."""
        if not self.config.clip_grad:
            return
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss and top-1 accuracy (%) on the test loader, summed over all ranks' shards (of the weight
        average with ``config.ema``)."""
        with self._averaged():
            return self._evaluate()

    def _evaluate(self) -> dict:
        self.model.eval()
        device = self.runtime.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        bar = tqdm(self.test_loader, desc="test", disable=not self.progress, leave=False, unit="batch")
        for images, labels in bar:
            with self._autocast(evaluation=True):
                logits = self.model(self._inputs(images)).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.numel()
        total_loss, total_correct, total = self.runtime.all_reduce_sum([loss_sum.item(), correct.item(), seen])
        return {"test_loss": total_loss / total, "test_acc": 100.0 * total_correct / total, "test_images": int(total)}
