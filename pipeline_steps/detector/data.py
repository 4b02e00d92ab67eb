"""Training crops around the symbols of annotated sheets, and the sheets' pixels (torch)."""

from __future__ import annotations

from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.evaluation.sheets import Sheet


def read_image_bytes(path: Path) -> torch.Tensor:
    """RGB uint8 tensor (3, H, W): a quarter of the memory of floats, for caching."""
    with Image.open(path) as image:
        array = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1)


def read_sheet_pixels(path: Path) -> torch.Tensor:
    """uint8 (C, H, W) for the training cache: one channel when the sheet is grey, as drawings mostly are
    (a third of the memory, so three times the sheets stay decoded), else RGB.

    A grey JPEG is decoded straight to its luma, which for neutral chroma is exactly the R = G = B of
    the RGB decode, in a quarter of the time (a 2,200 x 3,400 px sheet: 0.03 s against 0.17 s); an
    eighth-size draft, nearly free to decode, tells whether the sheet is grey.
    """
    if _grey_jpeg(path):
        with Image.open(path) as grey:
            grey.draft("L", grey.size)
            return torch.from_numpy(np.array(grey.convert("L"), dtype=np.uint8))[None]
    pixels = read_image_bytes(path)
    if torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2]):
        return pixels[:1].clone()
    return pixels


def _grey_jpeg(path: Path) -> bool:
    with Image.open(path) as image:
        if image.format != "JPEG" or image.mode != "RGB":
            return False
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        preview = np.asarray(image.convert("RGB"))
    return bool((preview[..., 0] == preview[..., 1]).all() and (preview[..., 1] == preview[..., 2]).all())


def read_image(path: Path) -> torch.Tensor:
    """RGB float tensor (3, H, W) in [0, 1]."""
    return read_image_bytes(path).float().div_(255.0)


class CropSampler:
    """Random training crops at the sheet's own scale, centred near a symbol, with flips and quarter turns.

    Boxes cut by the crop are kept when at least `min_visible` of their area shows, else dropped.
    The symbol a crop centres on is drawn with a weight per class of 1/sqrt(the class's share of the
    symbols): real sets hold many gate valves and few spectacle blinds, and rare classes are then
    seen more often without being repeated as often as full balancing would.
    """

    def __init__(
        self,
        sheets: list[Sheet],
        classes: list[str],
        crop: int,
        seed: int,
        min_visible: float = 0.7,
        cache_bytes: int = 1024**3,
    ):
        self.sheets = sheets
        self.index = {c: i + 1 for i, c in enumerate(classes)}
        self.crop = crop
        self.min_visible = min_visible
        self.rng = np.random.default_rng(seed)
        # Decoded sheets are kept up to `cache_bytes` (least recently used go first): a set of
        # 7,000 px sheets is many GB decoded, and must not all sit in memory at once.
        self._cache: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self._cache_limit = cache_bytes
        self._cached = 0
        counts = Counter(label for sheet in sheets for label in sheet.labels)
        total = sum(counts.values()) or 1
        self._weights = {label: (total / count) ** 0.5 for label, count in counts.items()}

    def pick_symbol(self, sheet: Sheet) -> int:
        weights = np.fromiter((self._weights[label] for label in sheet.labels), dtype=np.float64)
        return int(self.rng.choice(len(weights), p=weights / weights.sum()))

    def image(self, sheet: Sheet) -> torch.Tensor:
        if sheet.path in self._cache:
            self._cache.move_to_end(sheet.path)
            return self._cache[sheet.path]
        image = read_sheet_pixels(sheet.path)
        self._cache[sheet.path] = image
        self._cached += image.numel()
        while self._cached > self._cache_limit and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self._cached -= evicted.numel()
        return image

    def sample(self, sheet: Sheet) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = self.image(sheet)
        _, height, width = image.shape
        size_x, size_y = min(self.crop, width), min(self.crop, height)
        if len(sheet.boxes) and self.rng.random() < 0.9:
            x1, y1, x2, y2 = sheet.boxes[self.pick_symbol(sheet)]
            cx = (x1 + x2) / 2 + self.rng.uniform(-0.4, 0.4) * size_x
            cy = (y1 + y2) / 2 + self.rng.uniform(-0.4, 0.4) * size_y
            left = int(np.clip(cx - size_x / 2, 0, width - size_x))
            top = int(np.clip(cy - size_y / 2, 0, height - size_y))
        else:
            left = int(self.rng.integers(0, width - size_x + 1))
            top = int(self.rng.integers(0, height - size_y + 1))
        crop = image[:, top : top + size_y, left : left + size_x].expand(3, -1, -1).float().div_(255.0)
        boxes = sheet.boxes - np.array([left, top, left, top], dtype=np.float32)
        clipped = boxes.copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, size_x)
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, size_y)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        visible = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
        keep = visible >= self.min_visible * np.maximum(area, 1e-6)
        labels = [self.index[label] for label, k in zip(sheet.labels, keep, strict=True) if k]
        crop, clipped = self._augment(crop, clipped[keep])
        target = {
            "boxes": torch.from_numpy(clipped).float().reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        return crop.contiguous(), target

    def _augment(self, image: torch.Tensor, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        _, height, width = image.shape
        if self.rng.random() < 0.5:
            image = image.flip(-1)
            boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
        if self.rng.random() < 0.5:
            image = image.flip(-2)
            boxes = np.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], axis=1)
        if self.rng.random() < 0.5:  # a quarter turn: symbols sit on vertical pipes too
            image = image.transpose(-1, -2)
            boxes = boxes[:, [1, 0, 3, 2]]
        return image, boxes.astype(np.float32).reshape(-1, 4)
