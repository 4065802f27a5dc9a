"""MobileNet v1 for 32x32 inputs (as in kuangliu/pytorch-cifar).

A 3x3 stem convolution (32 channels, stride 1), thirteen depthwise-separable blocks -- each a 3x3
depthwise convolution (``groups`` = channels) + BN + ReLU, then a 1x1 pointwise convolution + BN +
ReLU -- with output channels ``64 128/2 128 256/2 256 512/2 512 512 512 512 512 1024/2 1024``
(``/2`` = stride 2 in the depthwise convolution), 2x2 average pooling and one linear layer.
46.35 M multiply-accumulates per 32x32 image with 10 classes.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from radixsnn.models.registry import register_model

MOBILENET_LAYOUT = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024)


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, in_planes, 3, stride, 1, groups=in_planes, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class MobileNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks, in_planes = [], 32
        for item in MOBILENET_LAYOUT:
            planes, stride = item if isinstance(item, tuple) else (item, 1)
            blocks.append(DepthwiseSeparable(in_planes, planes, stride))
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.avg_pool2d(out, 2).flatten(1)
        return self.linear(out)


@register_model("mobilenet", description="MobileNet v1 for CIFAR (depthwise separable convolutions)")
def mobilenet(num_classes: int = 10) -> nn.Module:
    return MobileNet(num_classes)
