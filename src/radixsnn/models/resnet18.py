"""The common CIFAR ResNet-18 (as in kuangliu/pytorch-cifar).

A 3x3 stem convolution (64 channels, stride 1, no max-pool), four stages of two basic blocks with
64/128/256/512 channels (stages 2-4 start with stride 2), projection shortcuts made of a 1x1
convolution plus BatchNorm wherever the shape changes, 4x4 average pooling and one linear layer.
555.42 M multiply-accumulates per 32x32 image with 10 classes.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from radixsnn.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, a 1x1 conv + BN ("option B") shortcut where the shape changes.

    ``shortcut`` names the shortcut's parameters: ``shortcut`` (kuangliu/pytorch-cifar) or ``downsample``
    (torchvision and chenyaofo/pytorch-cifar-models), so both families' checkpoints load as they are.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "shortcut"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut_name = shortcut
        if stride != 1 or in_planes != planes:
            setattr(self, shortcut, nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)))
        else:
            setattr(self, shortcut, nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + getattr(self, self.shortcut_name)(x)
        return F.relu(out)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4).flatten(1)
        return self.linear(out)


@register_model("resnet18", description="ResNet-18 for CIFAR (kuangliu layout, projection shortcuts)")
def resnet18(num_classes: int = 10) -> nn.Module:
    return ResNet18(num_classes)
