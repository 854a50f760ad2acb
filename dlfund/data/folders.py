"""``image_folder``: a folder with one sub-folder of images per class, as a :class:`Dataset`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dlfund.data.arrays import split_and_normalize
from dlfund.data.dataset import Dataset

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# PIL modes whose pixels are a single grey value (with or without alpha); everything else is read as RGB.
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def image_folder(
    path: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    name: str | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    normalize: str | None = "per_channel",
) -> Dataset:
    """Reads ``path/<class name>/**/<image>`` into a classification :class:`Dataset`.

    Every sub-folder of ``path`` is a class (hidden ones, starting with ".", are skipped); class ids follow
    the sorted folder names, so ``class_names`` is that sorted list. Images are found in the class folders
    and below them, by suffix (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM; hidden files and folders, starting
    with ".", are skipped), and read with Pillow as 8-bit values (16-bit greyscale scaled down, 65535 -> 255;
    32-bit integer or float pixels, which have no fixed range, are refused): x is (N, H, W, 1) when every image
    is greyscale, else (N, H, W, 3) with alpha and palettes converted to RGB. Pixels are scaled to [0, 1]
    (``x / 255``), then normalized per channel on train only, and the splits are made as in
    :func:`dlfund.data.from_arrays` (a fixed stratified test split, a seeded stratified validation split).

    Images of mixed sizes: with ``image_size`` every image is resized (bilinear) to exactly that size, not
    keeping its aspect ratio; without it, differing sizes are an error that names two files and their sizes.

    Args:
      path: the root folder.
      image_size: ``(height, width)``, or one int for square images; ``None`` keeps the size the images have.
      name: the dataset's name; default the folder's name.
      test_fraction, val_fraction, seed, normalize: as in :func:`dlfund.data.from_arrays`.

    Returns:
      A :class:`Dataset`: x float32 (N, H, W, C), y int32 (N,), ``class_names`` the sorted folder names.

    Raises:
      FileNotFoundError: ``path`` is not a folder.
      ValueError: fewer than two class folders, a class folder without images, a file Pillow cannot read,
        images of different sizes without ``image_size``, or a bad ``image_size``.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder: {root} is not a folder (expected {root}/<class name>/<images>)")
    size = _check_size(image_size)
    class_dirs = sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")), key=lambda p: p.name
    )
    if len(class_dirs) < 2:
        raise ValueError(
            f"image_folder: {root} has {len(class_dirs)} class folder(s); a classification dataset needs at "
            "least two, laid out as <path>/<class name>/<images>"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden_below(class_dir, p)
        )
        if not images:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise ValueError(f"image_folder: class folder {class_dir} holds no images (looked for {suffixes})")
        files += images
        labels += [label] * len(images)

    # First only the headers (Pillow opens lazily): sizes and modes decide the array shape before decoding.
    headers = []
    for file in files:
        try:
            with Image.open(file) as image:
                headers.append((image.size, image.mode))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image_folder: cannot read {file} as an image ({error})") from error
    grey = all(mode in _GREY_MODES for _, mode in headers)
    if size is None:
        first_size = headers[0][0]
        for file, (other_size, _) in zip(files, headers, strict=True):
            if other_size != first_size:
                raise ValueError(
                    f"image_folder: images differ in size: {files[0].relative_to(root)} is {_wxh(first_size)} "
                    f"but {file.relative_to(root)} is {_wxh(other_size)} (width x height); pass "
                    "image_size=(height, width) to resize every image to one size"
                )

    x = np.stack([_read(file, grey, size) for file in files])
    return split_and_normalize(
        name if name is not None else root.name,
        x,
        np.asarray(labels, np.int32),
        num_classes=len(class_dirs),
        class_names=tuple(p.name for p in class_dirs),
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        normalize=normalize,
        scale=1 / 255,
    )


def image_files(path: str | os.PathLike) -> list[Path]:
    """Every image file (by suffix) under ``path``, recursively, sorted; hidden files and folders are skipped.

    Raises:
      FileNotFoundError: ``path`` is not a folder. ValueError: it holds no images.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden_below(root, p)
    )
    if not files:
        raise ValueError(f"{root} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_images(files: list[Path], image_shape: tuple[int, int, int]) -> np.ndarray:
    """Images as uint8 [N, H, W, C] for a model that takes ``image_shape`` (H, W, C), C = 1 (grey) or 3 (RGB):
    each is converted to that many channels and resized (bilinear) to H x W when its size differs.

    Raises:
      ValueError: ``image_shape`` is not (H, W, 1) or (H, W, 3), or a file is not a readable image.
    """
    if len(image_shape) != 3 or image_shape[-1] not in (1, 3):
        raise ValueError(f"images need a model that takes (H, W, 1) or (H, W, 3) inputs, this one takes {image_shape}")
    height, width, channels = image_shape
    return np.stack([_read(file, channels == 1, (height, width)) for file in files])


def _read(file: Path, grey: bool, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (H, W, C), C = 1 for grey, else 3."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            image = _grey_8_bit(image, file) if image.mode in _WIDE_GREY_MODES else image
            image = image.convert("L" if grey else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL sizes are (width, height)
            pixels = np.asarray(image, np.uint8)
    except OSError as error:  # a header that parses over truncated or damaged pixel data
        raise ValueError(f"image_folder: cannot decode {file} ({error})") from error
    return pixels[..., np.newaxis] if grey else pixels


def _check_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    # A NumPy integer (image_size=np.int64(8), read from an array or a config) is one side, like a Python int.
    if isinstance(image_size, (int, np.integer)):
        size = (image_size, image_size)
    else:
        try:
            size = tuple(image_size)
        except TypeError:  # a float or another scalar that is not a side length
            size = ()
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width) of positive ints, got {image_size!r}")
    return int(size[0]), int(size[1])


# Greyscale modes wider than 8 bits. Pillow's convert("L") clips them at 255 instead of scaling: a 16-bit image
# would read as all white.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _grey_8_bit(image, file: Path):
    """A 16-bit greyscale image as 8-bit (``round(v / 257)``: 65535 -> 255); 32-bit integer and float images are
    refused, having no range to scale from."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.float32)
        return Image.fromarray(np.round(wide / 257.0).astype(np.uint8))
    kind = "float" if image.mode == "F" else "32-bit integer"
    raise ValueError(
        f"{file} has {kind} pixels (Pillow mode {image.mode!r}), which have no fixed range to scale to 8 bits; "
        "save the images as 8- or 16-bit, or read them yourself and use dlfund.data.from_arrays"
    )


def _hidden_below(root: Path, path: Path) -> bool:
    """Whether ``path`` or a folder between ``root`` and it is hidden (starts with "."); ``root``'s own path, such
    as ../images or ~/.data/images, does not count."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
