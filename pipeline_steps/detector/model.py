"""FCOS on a ~1M-parameter residual backbone, predicting from one stride-8 map, sized for symbols.

Images are used at their own scale (no resizing), and a fully convolutional model takes any sheet
size. Symbols of 15-100 px all fall on FCOS's stride-8 level, so the head runs on that level only;
the stride-16 and stride-32 stages still feed it context through a top-down merge. Chosen by
measurement (bench/train.py): the three-level FPN with 96 channels spent 57% of its compute in the
head, mostly on levels that never received a symbol.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

FEATURE_CHANNELS = 64
ARCHITECTURE = "fcos-symbol-p3"  # saved with each model; changes when the weights stop fitting the code


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
    """Stem to stride 4, residual stages to strides 8/16/32, merged top-down into one stride-8 map."""

    def __init__(self, widths: tuple[int, int, int] = (48, 96, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 24, 2), _conv_bn(24, 32, 2))
        self.stages = nn.ModuleList()
        previous = 32
        for width in widths:
            self.stages.append(nn.Sequential(ResidualBlock(previous, width, 2), ResidualBlock(width, width, 1)))
            previous = width
        self.lateral = nn.ModuleList(nn.Conv2d(width, FEATURE_CHANNELS, 1) for width in widths)
        self.smooth = nn.Conv2d(FEATURE_CHANNELS, FEATURE_CHANNELS, 3, padding=1)
        self.out_channels = FEATURE_CHANNELS

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(images)
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        merged = self.lateral[-1](stages[-1])
        for features, lateral in zip(reversed(stages[:-1]), reversed(self.lateral[:-1]), strict=True):
            merged = lateral(features) + functional.interpolate(merged, size=features.shape[-2:], mode="nearest")
        return OrderedDict([("stride8", self.smooth(merged))])


class _KeepScaleTransform(GeneralizedRCNNTransform):
    """Normalises and batches, but never resizes: boxes stay in the image's own pixels.

    Padding to a multiple of 32 is paper-white. torchvision pads with zeros (mid-grey after this
    normalisation), and the paper/grey edge at a sheet's right and bottom looked like a flange: it
    drew thousands of false flanges (held-out flange AP 0.56, every other class >= 0.97).
    """

    def resize(self, image: torch.Tensor, target: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        return image, target

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        batched = super().batch_images(images, size_divisible)
        paper = ((1.0 - torch.tensor(self.image_mean)) / torch.tensor(self.image_std)).to(batched.dtype)
        for padded, image in zip(batched, images, strict=True):
            _, height, width = image.shape
            padded[:, height:, :] = paper[:, None, None]
            padded[:, :height, width:] = paper[:, None, None]
        return batched


def build_detector(num_classes: int, score_threshold: float = 0.05, detections_per_image: int = 300) -> FCOS:
    """FCOS for `num_classes` symbol classes (index 0 is unused, as torchvision's detectors expect)."""
    backbone = SymbolBackbone()
    anchors = AnchorGenerator(sizes=((8,),), aspect_ratios=((1.0,),))
    model = FCOS(
        backbone,
        num_classes=num_classes + 1,
        anchor_generator=anchors,
        head=FCOSHead(FEATURE_CHANNELS, anchors.num_anchors_per_location()[0], num_classes + 1, num_convs=2),
        score_thresh=score_threshold,
        nms_thresh=0.5,
        detections_per_img=detections_per_image,
        topk_candidates=1000,
    )
    model.transform = _KeepScaleTransform(
        min_size=1, max_size=1 << 14, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], size_divisible=32
    )
    return model
