"""TFDS's MNIST-family and CIFAR builders, prepared without TensorFlow.

TFDS 4.9.10's own builders for these datasets need TensorFlow to *prepare* them (reading them does not): they
open the downloaded files with ``tf.io.gfile``, extract archives through it and encode each image to PNG in a
TensorFlow graph. The subclasses here keep everything that defines the dataset (name, version, features and
class names, split names, example keys, download URLs and TFDS's registered checksums of those downloads) and
replace only those three steps with the standard library and PIL. The result is the dataset TFDS would write:
the same examples in the same order under ``<data_dir>/<name>/<version>/``, which ``tfds.data_source(name)``
reads, and a folder that TFDS itself prepared as ``array_record`` is read by dlfund in turn. (The PNG bytes
may differ from TensorFlow's encoder; the decoded pixels do not.)

Each builder lists its ``SOURCE_URLS`` so that :mod:`dlfund.data.preparation` can check the host before it
lets TFDS try a download that would otherwise retry for minutes when offline.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils
from tensorflow_datasets.image_classification import cifar as tfds_cifar
from tensorflow_datasets.image_classification import mnist as tfds_mnist

_MNIST_FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# IDX type codes (the third magic byte); the MNIST family only uses 0x08, unsigned bytes.
_IDX_DTYPES = {0x08: np.dtype(np.uint8)}


class DownloadedBuilder:
    """What preparation needs to know about a builder whose sources come from the network."""

    SOURCE_URLS: ClassVar[tuple[str, ...]]

    @tfds_utils.classproperty
    @classmethod
    def _checksums_path(cls) -> epath.Path:
        # TFDS looks for checksums next to the module that defines the builder; these live in TFDS's own
        # package, and without them a download would not be verified.
        return tfds_utils.tfds_path() / "url_checksums" / f"{cls.name}.txt"


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 1) or (H, W, 3) uint8 -> PNG bytes, which TFDS's ``Image`` feature stores as they are."""
    from PIL import Image

    pixels = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def read_idx(path: str | Path) -> np.ndarray:
    """A gzipped IDX file (the MNIST format) -> its array, e.g. images (N, 28, 28) uint8 or labels (N,) uint8."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not a gzipped IDX file of unsigned bytes (magic {data[:4]!r})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    values = np.frombuffer(data, _IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: its header promises shape {shape}, it holds {values.size} values")
    return values.reshape(shape)


class _Mnist(DownloadedBuilder):
    """The MNIST-family steps: IDX files read with ``gzip``, images encoded with PIL."""

    URL: ClassVar[str]

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        # download(), not download_and_extract(): TFDS's extractor needs TensorFlow; gzip reads the .gz as is.
        paths = dl_manager.download({key: urllib.parse.urljoin(self.URL, name) for key, name in _MNIST_FILES.items()})
        return {
            split: self._generate_examples(paths[f"{split}_data"], paths[f"{split}_labels"])
            for split in ("train", "test")
        }

    def _generate_examples(self, images_path: Any, labels_path: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
        # The key is the example's position in the source file, as in TFDS's builder: same keys, same order.
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": encode_png(image[..., np.newaxis]), "label": int(label)}


class Mnist(_Mnist, tfds_mnist.MNIST, skip_registration=True):
    """TFDS's ``mnist`` 3.0.1: 70,000 28x28 grey digits, ``image`` (28, 28, 1) uint8, ``label`` 0..9."""

    name = "mnist"
    SOURCE_URLS = tuple(urllib.parse.urljoin(tfds_mnist.MNIST.URL, fname) for fname in _MNIST_FILES.values())


class FashionMnist(_Mnist, tfds_mnist.FashionMNIST, skip_registration=True):
    """TFDS's ``fashion_mnist`` 3.0.1: 70,000 28x28 grey Zalando article images in 10 named classes."""

    name = "fashion_mnist"
    SOURCE_URLS = tuple(urllib.parse.urljoin(tfds_mnist.FashionMNIST.URL, fname) for fname in _MNIST_FILES.values())


class Kmnist(_Mnist, tfds_mnist.KMNIST, skip_registration=True):
    """TFDS's ``kmnist`` 3.0.1: 70,000 28x28 grey Kuzushiji characters, one per row of Hiragana (10 classes)."""

    name = "kmnist"
    SOURCE_URLS = tuple(urllib.parse.urljoin(tfds_mnist.KMNIST.URL, fname) for fname in _MNIST_FILES.values())


class _Cifar(DownloadedBuilder):
    """The CIFAR steps: the binary batches read straight out of the downloaded ``.tar.gz`` with ``tarfile``."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        info = self._cifar_info
        members = _read_tar_members(
            dl_manager.download(info.url), info.prefix, [*info.label_files, *info.train_files, *info.test_files]
        )
        for label_key, label_file in zip(info.label_keys, info.label_files, strict=True):
            # TFDS's ClassLabel has only a class count in code; the names come with the data.
            self.info.features[label_key].names = [name for name in members[label_file].decode().split("\n") if name]
        return {
            "train": self._generate_examples("train_", [members[name] for name in info.train_files]),
            "test": self._generate_examples("test_", [members[name] for name in info.test_files]),
        }

    def _generate_examples(self, split_prefix: str, batches: list[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
        label_keys = self._cifar_info.label_keys
        record_size = len(label_keys) + 3 * 32 * 32  # label bytes, then the image as 3 planes of 32x32
        index = 0
        for batch in batches:
            if len(batch) % record_size:
                raise ValueError(
                    f"a CIFAR batch of {len(batch)} bytes is not a whole number of {record_size}-byte records"
                )
            for row in np.frombuffer(batch, np.uint8).reshape(-1, record_size):
                record: dict[str, Any] = dict(zip(label_keys, row[: len(label_keys)].tolist(), strict=True))
                # Same fields and keys as TFDS's builder: "id" is the split prefix and the index.
                record["id"] = f"{split_prefix}{index:05d}"
                record["image"] = encode_png(row[len(label_keys) :].reshape(3, 32, 32).transpose(1, 2, 0))
                yield index, record
                index += 1


class Cifar10(_Cifar, tfds_cifar.Cifar10, skip_registration=True):
    """TFDS's ``cifar10`` 3.0.2: 60,000 32x32 colour images, ``image`` (32, 32, 3) uint8, 10 named classes."""

    name = "cifar10"
    SOURCE_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)


class Cifar100(_Cifar, tfds_cifar.Cifar100, skip_registration=True):
    """TFDS's ``cifar100`` 3.0.2: 60,000 32x32 colour images, 100 fine classes (``label``) and 20 coarse ones."""

    name = "cifar100"
    SOURCE_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",)


def _read_tar_members(archive: Any, prefix: str, names: list[str]) -> dict[str, bytes]:
    """The bytes of ``prefix + name`` for each of ``names`` inside a (gzipped) tar file."""
    wanted = {prefix + name: name for name in names}
    found: dict[str, bytes] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                found[wanted[member.name]] = tar.extractfile(member).read()
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"{archive} lacks {', '.join(prefix + name for name in missing)}: is it the right download?")
    return found
