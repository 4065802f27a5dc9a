"""He et al. (2016) CIFAR ResNets: 3 stages of 16/32/64 channels, option-A shortcuts.

Parameter names match the widely used pretrained checkpoints (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.conv{1,2}``, ``bn{1,2}``, ``linear``), so those load directly.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from radixsnn.models.registry import register_model


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: stride-2 spatial subsampling plus zero channel padding."""

    def __init__(self, pad_channels: int):
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x):
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.pad_channels, self.pad_channels))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut((planes - in_planes) // 2)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """A 16-channel stem, three stages of ``num_blocks`` blocks (16, 32, 64 channels), global average
    pooling and a linear classifier named ``classifier``; ``block(in_planes, planes, stride)`` makes a block
    (this module's option-A :class:`BasicBlock` by default)."""

    def __init__(self, num_blocks: int, num_classes: int = 10, block=BasicBlock, classifier: str = "linear"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(num_blocks):
                blocks.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.classifier_name = classifier
        setattr(self, classifier, nn.Linear(64, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return getattr(self, self.classifier_name)(out)


for _depth in (20, 32, 44, 56):
    register_model(f"resnet{_depth}", description=f"He et al. CIFAR ResNet-{_depth}, option-A shortcuts (akamaster weights)")(
        lambda num_classes=10, _n=(_depth - 2) // 6: CifarResNet(_n, num_classes)
    )
