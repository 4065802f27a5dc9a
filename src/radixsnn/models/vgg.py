"""VGG networks for 32x32 inputs: VGG-16 and the VGG-9 of Lee et al. (2020).

Both are built from the same pieces: 3x3 convolutions (padding 1, no bias) each followed by
BatchNorm and ReLU, 2x2 pooling with stride 2, then a classifier of linear layers.

``vgg16`` -- the common CIFAR VGG-16 (as in kuangliu/pytorch-cifar): thirteen convolutions in five
blocks ``64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M`` (``M`` = max-pool), which
leaves a 512x1x1 feature map, then one ``Linear(512, num_classes)``. 313.20 M multiply-accumulates
per 32x32 image with 10 classes.

``vgg9`` -- the 9-layer VGG of Lee et al., "Enabling Spike-based Backpropagation for Training Deep
Neural Network Architectures" (Frontiers in Neuroscience, 2020), layer for layer as in the authors'
published CIFAR-10 code: seven convolutions ``64 64 A 128 128 A 256 256 256 A`` (``A`` = 2x2
average pooling), flatten (256x4x4 = 4096 features), ``Linear(4096, 1024)``, ReLU, dropout,
``Linear(1024, num_classes)``. Lee et al. have no BatchNorm (they train the spiking network
directly); it is added here after every convolution because the network is trained as an ANN first
and BatchNorm folds into the convolution at conversion, so it changes neither the converted
network's layout nor its operation count. 194.72 M multiply-accumulates with 10 classes, of which
190.51 M in the convolutions and 4.19 M in ``Linear(4096, 1024)``.
"""
from __future__ import annotations

import torch.nn as nn

from radixsnn.models.registry import register_model

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG9_LAYOUT = (64, 64, "A", 128, 128, "A", 256, 256, 256, "A")


def make_features(layout, in_channels: int = 3) -> nn.Sequential:
    """Convolution stack from a layout: an int is a conv3x3+BN+ReLU with that many channels,
    ``"M"`` a 2x2 max-pool, ``"A"`` a 2x2 average-pool."""
    layers: list[nn.Module] = []
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif item == "A":
            layers.append(nn.AvgPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, item, 3, 1, 1, bias=False), nn.BatchNorm2d(item), nn.ReLU()]
            in_channels = item
    return nn.Sequential(*layers)


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class VGG16(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = make_features(VGG16_LAYOUT)
        self.classifier = nn.Linear(512, num_classes)
        _init(self)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class VGG9(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.features = make_features(VGG9_LAYOUT)
        self.classifier = nn.Sequential(
            nn.Linear(256 * 4 * 4, 1024),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(1024, num_classes),
        )
        _init(self)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model("vgg16", description="VGG-16 with BatchNorm, 5 max-pools, Linear(512, classes) (the paper's network)")
def vgg16(num_classes: int = 10) -> nn.Module:
    return VGG16(num_classes)


@register_model("vgg9", description="VGG-9 of Lee et al. (2020): 7 convolutions, 3 average pools, 4096-1024-classes")
def vgg9(num_classes: int = 10) -> nn.Module:
    return VGG9(num_classes)
