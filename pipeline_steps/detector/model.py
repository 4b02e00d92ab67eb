"""FCOS on a ~1M-parameter residual backbone with a 3-level FPN (strides 8/16/32), sized for symbols.

Images are used at their own scale (no resizing): symbols of 15-100 px land on the stride-8 level,
and a fully convolutional model takes any sheet size. Chosen by measurement (bench/train.py).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork

FPN_CHANNELS = 96


def _conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_channels, out_channels, stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SymbolBackbone(nn.Module):
    """Stem to stride 4, three residual stages to strides 8/16/32, and an FPN over them."""

    def __init__(self, widths: tuple[int, int, int] = (48, 96, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 24, 2), _conv_bn(24, 32, 2))
        self.stages = nn.ModuleList()
        previous = 32
        for width in widths:
            self.stages.append(nn.Sequential(ResidualBlock(previous, width, 2), ResidualBlock(width, width, 1)))
            previous = width
        self.fpn = FeaturePyramidNetwork(list(widths), FPN_CHANNELS)
        self.out_channels = FPN_CHANNELS

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = OrderedDict()
        x = self.stem(images)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            features[str(index)] = x
        return self.fpn(features)


class _KeepScaleTransform(GeneralizedRCNNTransform):
    """Normalises and batches, but never resizes: boxes stay in the image's own pixels."""

    def resize(self, image, target=None):  # type: ignore[no-untyped-def]
        return image, target


def build_detector(num_classes: int, score_threshold: float = 0.05, detections_per_image: int = 300) -> FCOS:
    """FCOS for `num_classes` symbol classes (index 0 is unused, as torchvision's detectors expect)."""
    backbone = SymbolBackbone()
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,)), aspect_ratios=((1.0,),) * 3)
    model = FCOS(
        backbone,
        num_classes=num_classes + 1,
        anchor_generator=anchors,
        head=FCOSHead(FPN_CHANNELS, anchors.num_anchors_per_location()[0], num_classes + 1, num_convs=2),
        score_thresh=score_threshold,
        nms_thresh=0.5,
        detections_per_img=detections_per_image,
        topk_candidates=1000,
    )
    model.transform = _KeepScaleTransform(
        min_size=1, max_size=1 << 14, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], size_divisible=32
    )
    return model
