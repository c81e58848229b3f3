"""ResNet backbones for the image path, with the ``embed`` / ``head`` interface of every falcon_sc network.

Written here rather than imported from torchvision, whose registry wheels are CUDA builds of torch. Parameter names
follow torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc`` replaced by ``head``), so that torchvision,
MoCo v3 and solo-learn checkpoints load with :func:`falcon_sc.models.checkpoint.load_backbone`.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 convolutions with a residual connection (ResNet-50; stride on the 3x3, as torchvision)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """ResNet with a linear fine-class head.

    Parameters
    ----------
    block
        :class:`BasicBlock` or :class:`Bottleneck`.
    layers
        Blocks per stage (``(2, 2, 2, 2)``: ResNet-18; ``(3, 4, 6, 3)`` with bottlenecks: ResNet-50).
    n_classes
        Output logits (fine classes).
    small_inputs
        CIFAR stem: a 3x3 stride-1 first convolution and no max-pool (32 px images), as the FALCON reference;
        otherwise the ImageNet stem (7x7 stride 2 and a 3x3 max-pool).
    in_channels
        Image channels (1 for grey digits).
    width
        Channels of the first stage (64 in the standard ResNets; each later stage doubles it). Narrower networks
        are for small images on a CPU.

    Examples
    --------
    >>> import torch
    >>> from falcon_sc.models.resnet import BasicBlock, ResNet
    >>> net = ResNet(BasicBlock, (1, 1, 1, 1), n_classes=4, in_channels=1, width=8)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 4])
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        n_classes: int,
        *,
        small_inputs: bool = False,
        in_channels: int = 3,
        width: int = 64,
    ) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes={n_classes} must be at least 1.")
        if width < 1:
            raise ValueError(f"width={width} must be at least 1.")
        if small_inputs:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes, stages = width, []
        in_planes = width
        for i, n_blocks in enumerate(layers):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
            planes *= 2
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.n_features = in_planes
        self.head = nn.Linear(in_planes, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (``n_features`` per image)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fine-class logits."""
        return self.head(self.embed(x))


def resnet18(n_classes: int, *, small_inputs: bool = True, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18; by default with the CIFAR stem (3x3 stride 1, no max-pool) used by the FALCON reference.

    Examples
    --------
    >>> import torch
    >>> from falcon_sc.models import resnet18
    >>> net = resnet18(n_classes=100)
    >>> net.embed(torch.zeros(2, 3, 32, 32)).shape  # pooled features; net(x) gives the 100 logits
    torch.Size([2, 512])
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), n_classes, small_inputs=small_inputs, in_channels=in_channels, width=width)


def resnet50(n_classes: int, *, small_inputs: bool = False, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-50 with the ImageNet stem (224 px; BREEDS and tieredImageNet in the reference).

    Examples
    --------
    >>> import torch
    >>> from falcon_sc.models import resnet50
    >>> net = resnet50(n_classes=68, width=8)  # narrow, for the example
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 68])
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), n_classes, small_inputs=small_inputs, in_channels=in_channels, width=width)
