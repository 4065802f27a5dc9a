"""The CIFAR ResNets of chenyaofo/pytorch-cifar-models: He et al.'s 16/32/64-channel stages of
n = (depth - 2) / 6 basic blocks, with 1x1 convolution + BN ("option B") shortcuts where the shape changes.

Parameter names are the upstream ones (``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv{1,2}`` / ``bn{1,2}`` /
``downsample.{0,1}``, ``fc``), so its released checkpoints load as they are. Each dataset's models carry
their own input normalization: ``cifar10_resnet20`` normalizes with CIFAR-10 statistics,
``cifar100_resnet44`` with CIFAR-100's.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from radixsnn.models.registry import register_model
from radixsnn.models.resnet18 import BasicBlock

NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.507, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761)),
}


class CifarResNetB(nn.Module):
    def __init__(self, num_blocks: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(num_blocks):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut="downsample"))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.avgpool(out).flatten(1))


for _dataset, (_mean, _std) in NORMALIZATION.items():
    for _depth in (20, 32, 44, 56):
        register_model(
            f"{_dataset}_resnet{_depth}", mean=_mean, std=_std, num_classes=100 if _dataset == "cifar100" else 10,
            description=f"chenyaofo {_dataset.upper()} ResNet-{_depth}, option-B shortcuts, {_dataset} normalization",
        )(lambda num_classes=10, _n=(_depth - 2) // 6: CifarResNetB(_n, num_classes))
