"""Real-photo inputs: torchvision's standard ImageNet evaluation pre-processing, with Pillow.

Resize the shorter side to ``crop / 0.875`` (256 for 224, 342 for 299) with antialiased
bilinear resampling, centre-crop to the input size, scale to [0, 1], then normalise with the
ImageNet mean and std. The arithmetic follows torchvision's ``ImageClassification`` preset
(integer sizes, ``round`` for the crop offsets), so a photo gives the tensor a torchvision
pipeline would. Like torchvision, EXIF orientation is not applied.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from codenn_convert.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The centre crop keeps this fraction of the resized shorter side.
CROP_FRACTION = 0.875


def resize_size(input_size: tuple[int, int]) -> int:
    """The shorter side before the crop: ceil(max(H, W) / 0.875), so the crop always fits.

    0.875 = 7/8, so integer arithmetic gives it exactly: 224 -> 256, 299 -> 342.
    """
    return -(-max(input_size) * 8 // 7)


def load_image(path: str | os.PathLike[str], input_size: tuple[int, int]) -> np.ndarray:
    """One photo as a float32 NCHW batch ``[1, 3, H, W]``, pre-processed for ImageNet."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            rgb = img.convert("RGB")  # greyscale, palette, RGBA and CMYK photos alike
    except FileNotFoundError:
        raise UsageError(f"image not found: {p}") from None
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels
        raise UsageError(f"cannot read image {p}: {exc}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"cannot read image {p}: {exc}") from None
    h, w = input_size
    short = resize_size(input_size)
    # torchvision: the shorter side becomes ``short``, the longer one int(short * long / short).
    iw, ih = rgb.size
    size = (short, int(short * ih / iw)) if iw <= ih else (int(short * iw / ih), short)
    # Pillow's BILINEAR widens its filter when downscaling, i.e. it antialiases (torchvision's
    # default for PIL images).
    resized = rgb.resize(size, Image.Resampling.BILINEAR)
    top = int(round((resized.height - h) / 2.0))
    left = int(round((resized.width - w) / 2.0))
    crop = resized.crop((left, top, left + w, top + h))
    x = np.asarray(crop, dtype=np.float32) / 255.0  # H, W, C in [0, 1]
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)  # 1, 3, H, W
