"""The CIFAR ResNets of chenyaofo/pytorch-cifar-models: He et al.'s 16/32/64-channel stages of
n = (depth - 2) / 6 basic blocks, with 1x1 convolution + BN ("option B") shortcuts where the shape changes.

Parameter names are the upstream ones (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv{1,2}`` / ``bn{1,2}`` /
``downsample.{0,1}``, ``fc``), so its released checkpoints load as they are. Each dataset's models carry
their own input normalization: ``cifar10_resnet20`` normalizes with CIFAR-10 statistics,
``cifar100_resnet44`` with CIFAR-100's.
"""
from __future__ import annotations

from functools import partial

import torch.nn as nn

from radixsnn.models.registry import register_model
from radixsnn.models.resnet18 import BasicBlock
from radixsnn.models.resnet_cifar import CifarResNet

NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.507, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761)),
}


class CifarResNetB(CifarResNet):
    """:class:`~radixsnn.models.resnet_cifar.CifarResNet` with option-B blocks, the classifier ``fc`` and the
    upstream initialization (He fan-out for convolutions, PyTorch's default for the classifier)."""

    def __init__(self, num_blocks: int, num_classes: int = 10):
        super().__init__(num_blocks, num_classes, block=partial(BasicBlock, shortcut="downsample"), classifier="fc")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.fc.reset_parameters()


for _dataset, (_mean, _std) in NORMALIZATION.items():
    for _depth in (20, 32, 44, 56):
        register_model(
            f"{_dataset}_resnet{_depth}", mean=_mean, std=_std, num_classes=100 if _dataset == "cifar100" else 10,
            description=f"chenyaofo {_dataset.upper()} ResNet-{_depth}, option-B shortcuts, {_dataset} normalization",
        )(lambda num_classes=10, _n=(_depth - 2) // 6: CifarResNetB(_n, num_classes))
