"""Image files decoded on access: the samples of an ``image_folder`` dataset.

Opening a folder lists its files and reads a few headers (:func:`inspect`); :class:`ImageFiles`
decodes a file only when its row is indexed, keeps recent rows in a cache bounded in bytes
(``LOUPE_DECODE_CACHE_MB``, default 256), and digests a file's bytes (not its pixels) for content
hashes. Preprocessing follows torchvision's ``Resize(n)`` + ``CenterCrop(h, w)`` (bilinear with
antialiasing, PIL's), or resizes to an exact ``image_size``; values are float32 in [0, 1].
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.base import DatasetError
from data.lazy import Rows

if TYPE_CHECKING:  # PIL is imported on use
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
HEADER_SAMPLE = 256
"""Headers read when a folder opens (all of them in smaller folders, else evenly spaced): they
decide the default channel count and the sample shape, and catch unreadable files early."""
DEFAULT_CACHE_MB = 256


@dataclass(frozen=True)
class Preprocess:
    """How a file becomes a C×H×W array: ``channels`` (1 or 3), then either ``image_size`` (resize to
    exactly H×W) or ``resize`` (shorter side to n, aspect kept) followed by ``center_crop`` (H, W)."""

    channels: int
    image_size: tuple[int, int] | None = None
    resize: int | None = None
    center_crop: tuple[int, int] | None = None

    def out_size(self, first: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of every sample, given the (width, height) of the first image."""
        if self.center_crop is not None:
            return self.center_crop
        if self.image_size is not None:
            return self.image_size
        if self.resize is not None:
            return _resized(first, self.resize)[::-1]
        return first[1], first[0]

    def digest(self) -> bytes:
        """Identifies the preprocessing in content hashes (decoding differently is other content)."""
        return repr(("images-v1", self.channels, self.image_size, self.resize, self.center_crop)).encode()


def _resized(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``shorter`` and the longer one scaled and truncated,
    as torchvision's ``Resize(int)``."""
    w, h = size
    if w <= h:
        return shorter, int(shorter * h / w)
    return int(shorter * w / h), shorter


def open_image(dataset_id: str, path: str | Path, load: bool = True) -> PILImage:
    """The image at ``path`` (decoded when ``load``, else only its header read). Images above PIL's
    ``MAX_IMAGE_PIXELS`` (about 89 million pixels) are refused before decoding: PIL only warns up to
    twice that, and decoding one costs gigabytes."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if not load:
                    return img
                img.load()
                return img.copy()
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # UnidentifiedImageError and truncated files are OSErrors
        raise DatasetError(f"dataset {dataset_id!r}: cannot read image {str(path)!r}: {err}") from None


def is_grey(mode: str) -> bool:
    """Greyscale modes (1, L, LA, I, F…); palette images count as colour."""
    from PIL import Image

    return Image.getmodebase(mode) == "L"


def header_sample(n: int) -> np.ndarray:
    """Positions of the headers read at open: all when few, else ``HEADER_SAMPLE`` evenly spaced."""
    return np.unique(np.linspace(0, n - 1, min(n, HEADER_SAMPLE)).round().astype(np.int64))


def inspect(dataset_id: str, files: Sequence[str], channels: int | None, exact_size: bool
            ) -> tuple[int, tuple[int, int]]:
    """(channels, (width, height) of the first image) from the sampled headers. Channels default
    to 1 only when every sampled image is greyscale. With ``exact_size`` (no resizing configured)
    every sampled image must have the first one's size."""
    modes_sizes = [(i, open_image(dataset_id, files[i], load=False)) for i in header_sample(len(files))]
    first = modes_sizes[0][1].size
    if exact_size:
        for i, img in modes_sizes:
            if img.size != first:
                open_image(dataset_id, files[i])  # a file that cannot be decoded is the first thing to say
                raise size_error(dataset_id, files[i], img.size, first)
    chosen = channels or (1 if all(is_grey(img.mode) for _, img in modes_sizes) else 3)
    return chosen, first


def size_error(dataset_id: str, path: str, size: tuple[int, int], first: tuple[int, int]) -> DatasetError:
    return DatasetError(
        f"dataset {dataset_id!r}: image {path!r} is {size[0]}x{size[1]} but earlier images are "
        f"{first[0]}x{first[1]} (width x height); set image_size = [H, W], or resize and center_crop, in the "
        "dataset's manifest entry"
    )


def to_array(dataset_id: str, img: PILImage, path: str, prep: Preprocess, size: tuple[int, int]) -> np.ndarray:
    """One decoded image as a C×H×W float32 array in [0, 1] of spatial ``size`` (H, W)."""
    from PIL import Image

    img = img.convert("L" if prep.channels == 1 else "RGB")
    if prep.image_size is not None:
        img = img.resize(prep.image_size[::-1], Image.Resampling.BILINEAR)
    elif prep.resize is not None:
        img = img.resize(_resized(img.size, prep.resize), Image.Resampling.BILINEAR)
    if prep.center_crop is not None:
        height, width = prep.center_crop
        if img.size[0] < width or img.size[1] < height:
            raise DatasetError(
                f"dataset {dataset_id!r}: image {path!r} is {img.size[0]}x{img.size[1]} after resizing, smaller "
                f"than center_crop {width}x{height} (width x height); set resize to at least {max(size)}"
            )
        top, left = round((img.size[1] - height) / 2.0), round((img.size[0] - width) / 2.0)
        img = img.crop((left, top, left + width, top + height))
    elif img.size != (size[1], size[0]):
        raise size_error(dataset_id, path, img.size, (size[1], size[0]))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if prep.channels == 1 else arr.transpose(2, 0, 1)


def _cache_bytes() -> int:
    raw = os.environ.get("LOUPE_DECODE_CACHE_MB", str(DEFAULT_CACHE_MB))
    try:
        return max(int(float(raw) * 2**20), 0)
    except ValueError:
        raise DatasetError(f"LOUPE_DECODE_CACHE_MB must be a number of megabytes, got {raw!r}") from None


class ImageFiles(Rows):
    """Rows decoded from image files on access (see the module docstring). A cached row or digest
    is reused only while the file's (mtime, size) stays the same, so an edited file is read again."""

    def __init__(self, dataset_id: str, files: Sequence[str], prep: Preprocess, size: tuple[int, int]) -> None:
        self.dataset_id, self.files, self.prep, self.size = dataset_id, list(files), prep, size
        self._rows: OrderedDict[int, tuple[tuple[int, int], np.ndarray]] = OrderedDict()
        self._digests: dict[int, tuple[tuple[int, int], bytes]] = {}
        self._held, self._limit = 0, _cache_bytes()
        self._lock = threading.Lock()
        self._decoded = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), self.prep.channels, *self.size)

    def _stamp(self, i: int) -> tuple[int, int]:
        try:
            st = os.stat(self.files[i])
        except OSError as err:
            raise DatasetError(f"dataset {self.dataset_id!r}: cannot read image {self.files[i]!r}: {err}") from None
        return st.st_mtime_ns, st.st_size

    def _row(self, i: int) -> np.ndarray:
        stamp = self._stamp(i)
        with self._lock:
            hit = self._rows.get(i)
            if hit is not None and hit[0] == stamp:
                self._rows.move_to_end(i)
                return hit[1]
        img = open_image(self.dataset_id, self.files[i])
        row = to_array(self.dataset_id, img, self.files[i], self.prep, self.size)
        with self._lock:
            self._decoded += 1
            old = self._rows.pop(i, None)
            self._held -= old[1].nbytes if old is not None else 0
            if row.nbytes <= self._limit:
                self._rows[i] = (stamp, row)
                self._held += row.nbytes
            while self._held > self._limit:
                _, (_, dropped) = self._rows.popitem(last=False)
                self._held -= dropped.nbytes
        return row

    def read(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.float32)
        for k, i in enumerate(positions.tolist()):
            out[k] = self._row(i)
        return out

    def digests(self, positions: np.ndarray) -> list[bytes]:
        found = []
        for i in positions.tolist():
            stamp = self._stamp(i)
            hit = self._digests.get(i)
            if hit is None or hit[0] != stamp:
                try:
                    with open(self.files[i], "rb") as handle:
                        digest = hashlib.file_digest(handle, "sha256").digest()
                except OSError as err:
                    raise DatasetError(f"dataset {self.dataset_id!r}: cannot read image {self.files[i]!r}: "
                                       f"{err}") from None
                hit = self._digests[i] = (stamp, hashlib.sha256(self.prep.digest() + digest).digest())
            found.append(hit[1])
        return found

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"decoded": self._decoded, "cached_rows": len(self._rows), "cached_bytes": self._held}
