"""Tests for the TFDS-backed datasets (MNIST family, CIFAR): reading, TF-free preparation, offline behaviour.

Nothing here touches the network. Reading is tested under ``tfds.testing.mock_data``; preparation with the
download step replaced by small fake source files in the real formats (IDX, CIFAR binary tar); being offline
through ``download=False`` or a probe that says the host is unreachable.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import struct
import sys
import tarfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx
from tensorflow_datasets.core.download import downloader, resource

from dlfund import fit, models
from dlfund.data import CorruptDatasetError, DatasetNotPreparedError, load, network
from dlfund.data.builders.downloaded import Cifar10, Cifar100, FashionMnist, Kmnist, Mnist, read_idx
from dlfund.data.preparation import incomplete_dirs, partial_downloads
from dlfund.data.splitting import stratified_split

# name -> (builder, input_shape, num_classes, host:port the files come from)
TFDS_DATASETS = {
    "mnist": (Mnist, (28, 28, 1), 10, "storage.googleapis.com:443"),
    "fashion_mnist": (FashionMnist, (28, 28, 1), 10, "fashion-mnist.s3-website.eu-central-1.amazonaws.com:80"),
    "kmnist": (Kmnist, (28, 28, 1), 10, "codh.rois.ac.jp:80"),
    "cifar10": (Cifar10, (32, 32, 3), 10, "www.cs.toronto.edu:443"),
    "cifar100": (Cifar100, (32, 32, 3), 100, "www.cs.toronto.edu:443"),
}
MNIST_FAMILY = ("mnist", "fashion_mnist", "kmnist")
FAKE_TRAIN, FAKE_TEST = 60, 20  # examples per fake source split
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ---------------------------------------------------------------------------------------------- fake sources


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fake_images(count: int, shape: tuple[int, ...], offset: int) -> np.ndarray:
    """(count, *shape) uint8 random images whose first two pixels encode their index + offset (to find them)."""
    images = np.random.default_rng(offset).integers(0, 256, (count, *shape), dtype=np.uint8)
    flat = images.reshape(count, -1)
    flat[:, 0] = (np.arange(count) + offset) % 256
    flat[:, 1] = (np.arange(count) + offset) // 256
    return images


def _fake_labels(count: int, offset: int, num_classes: int) -> np.ndarray:
    return ((np.arange(count) + offset) * 7) % num_classes


def _identity(image: np.ndarray) -> int:
    """The index + offset written by _fake_images into an image (H, W, C)."""
    flat = image.reshape(-1)
    return int(flat[0]) + 256 * int(flat[1])


def _cifar_batches(count: int, offset: int, label_counts: list[int]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """CIFAR's binary records (label bytes, then 3 planes of 32x32) and the images (count, 32, 32, 3), labels."""
    images = _fake_images(count, (32, 32, 3), offset)
    labels = np.stack([_fake_labels(count, offset + k, n) for k, n in enumerate(label_counts)], axis=1)
    planes = images.transpose(0, 3, 1, 2).reshape(count, -1)  # HWC -> CHW, as the files store them
    return (
        b"".join(bytes(row_labels.tolist()) + row.tobytes() for row_labels, row in zip(labels, planes)),
        images,
        labels,
    )


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def fake_sources(tmp_path_factory) -> Path:
    """Small files in the exact formats of the real downloads, named as the URLs' last path component."""
    root = tmp_path_factory.mktemp("sources")
    for prefix, count, offset in (("train", FAKE_TRAIN, 0), ("t10k", FAKE_TEST, 1000)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", _fake_images(count, (28, 28), offset))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", _fake_labels(count, offset, 10))
    # CIFAR-10: five train batches and a test batch; CIFAR-100: one of each, with (coarse, fine) labels.
    members = {"cifar-10-batches-bin/batches.meta.txt": ("\n".join(CIFAR10_NAMES) + "\n\n").encode()}
    for k in range(1, 6):
        members[f"cifar-10-batches-bin/data_batch_{k}.bin"] = _cifar_batches(12, 100 * k, [10])[0]
    members["cifar-10-batches-bin/test_batch.bin"] = _cifar_batches(FAKE_TEST, 1000, [10])[0]
    _write_tar(root / "cifar-10-binary.tar.gz", members)
    _write_tar(
        root / "cifar-100-binary.tar.gz",
        {
            "cifar-100-binary/coarse_label_names.txt": "\n".join(f"coarse{i}" for i in range(20)).encode(),
            "cifar-100-binary/fine_label_names.txt": "\n".join(f"fine{i}" for i in range(100)).encode(),
            "cifar-100-binary/train.bin": _cifar_batches(FAKE_TRAIN, 0, [20, 100])[0],
            "cifar-100-binary/test.bin": _cifar_batches(FAKE_TEST, 1000, [20, 100])[0],
        },
    )
    return root


@pytest.fixture
def fake_download(monkeypatch, fake_sources):
    """Replaces TFDS's download step by the fake files; returns the list of URLs that were asked for."""
    requested: list[str] = []

    def download(self, url_or_urls):
        def fetch(url):
            requested.append(url)
            return fake_sources / url.rsplit("/", 1)[-1]

        return {k: fetch(u) for k, u in url_or_urls.items()} if isinstance(url_or_urls, dict) else fetch(url_or_urls)

    monkeypatch.setattr(tfds.download.DownloadManager, "download", download)
    return requested


@pytest.fixture
def offline(monkeypatch):
    """A probe that finds no host reachable; returns the URLs it was asked about."""
    asked: list[str] = []

    def unreachable(url, timeout=network.PROBE_TIMEOUT):
        asked.append(url)
        return False

    monkeypatch.setattr(network, "reachable", unreachable)
    return asked


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under root: relative path -> (size, sha256)."""
    return {
        os.fspath(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------ reading, under the mock


@pytest.mark.parametrize("name", sorted(TFDS_DATASETS))
def test_mocked_dataset_shapes_dtypes_labels_and_sizes(tmp_path, name):
    builder_cls, input_shape, num_classes, _ = TFDS_DATASETS[name]
    with tfds.testing.mock_data(num_examples=50):
        ds = load(name, data_dir=tmp_path, download=True)
        expected_names = tuple(builder_cls(data_dir=os.fspath(tmp_path)).info.features["label"].names)
    assert ds.name == name
    assert ds.task == "classification"
    assert ds.input_shape == input_shape
    assert ds.num_classes == num_classes
    assert ds.class_names == expected_names
    assert len(ds.class_names) == num_classes
    # The mock gives every split the same 50 examples; the validation carve takes 10% of train.
    for (x, y), size in zip(ds.splits().values(), (45, 5, 50), strict=True):
        assert x.shape == (size, *input_shape)
        assert x.dtype == np.float32
        assert y.shape == (size,)
        assert y.dtype == np.int32
        assert ((y >= 0) & (y < num_classes)).all()
        assert np.isfinite(x).all()
    assert ds.normalization.mean.shape == (1, 1, input_shape[-1])  # one mean/std per channel
    assert ds.normalization.scale == pytest.approx(1 / 255)
    assert ds.target_normalization is None


def test_class_names_come_from_the_tfds_class_label(tmp_path):
    with tfds.testing.mock_data(num_examples=10):
        fashion = load("fashion_mnist", data_dir=tmp_path, download=True)
        kmnist = load("kmnist", data_dir=tmp_path, download=True)
    assert fashion.class_names[:3] == ("T-shirt/top", "Trouser", "Pullover")
    assert fashion.class_names[-1] == "Ankle boot"
    assert kmnist.class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


@pytest.mark.parametrize("download", [None, False])
def test_under_the_mock_loading_just_works_without_files_or_a_probe(tmp_path, monkeypatch, download):
    """As with tfds itself: a user's test of their training code runs under mock_data, offline, as written."""

    def no_network(*args, **kwargs):
        raise AssertionError("the network was probed under tfds.testing.mock_data")

    monkeypatch.setattr(network, "reachable", no_network)
    with tfds.testing.mock_data(num_examples=40):
        ds = load("mnist", data_dir=tmp_path / "data", download=download)
        model = models.MLP(28 * 28, (16,), 10, rngs=nnx.Rngs(0))
        history = fit(model, ds, epochs=2, batch_size=8, progress=False).history
    assert [len(y) for _, y in ds.splits().values()] == [36, 4, 40]
    assert np.isfinite(history["loss"]).all() and len(history["loss"]) == 2
    assert not (tmp_path / "data").exists()  # nothing prepared, nothing written
    # Outside the mock the same call is offline again: not prepared, and it says so at once.
    with pytest.raises(DatasetNotPreparedError, match="not prepared"):
        load("mnist", data_dir=tmp_path / "data", download=False)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_mocked_normalization_is_fitted_on_the_train_split_only(tmp_path, name):
    builder_cls = TFDS_DATASETS[name][0]
    with tfds.testing.mock_data(num_examples=60):
        ds = load(name, data_dir=tmp_path, download=True, seed=3)
        # The same mocked records, read directly: the stored train split before the validation carve.
        source = builder_cls(data_dir=os.fspath(tmp_path)).as_data_source(split="train")
        records = [source[i] for i in range(len(source))]
    pixels = np.stack([r["image"] for r in records]).astype(np.float64) / 255
    labels = np.array([r["label"] for r in records])
    train, val = stratified_split(labels, 0.1, 3)
    np.testing.assert_array_equal(ds.train[1], labels[train])
    np.testing.assert_array_equal(ds.val[1], labels[val])
    np.testing.assert_allclose(ds.normalization.mean.ravel(), pixels[train].mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(ds.normalization.std.ravel(), pixels[train].std(axis=(0, 1, 2)), rtol=1e-5)
    # Fitted without the validation examples: the statistics of all of them differ (at the same tolerance).
    assert not np.allclose(ds.normalization.mean.ravel(), pixels.mean(axis=(0, 1, 2)), rtol=1e-5, atol=0)
    np.testing.assert_allclose(ds.train[0].mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train[0].std(axis=(0, 1, 2)), 1.0, rtol=1e-4)
    np.testing.assert_allclose(ds.normalization.invert(ds.val[0]), pixels[val] * 255, atol=1e-3)


# ------------------------------------------------------------------------------- preparing without TensorFlow


@pytest.mark.parametrize("name", MNIST_FAMILY)
def test_mnist_family_is_prepared_without_tensorflow_and_read_back_exactly(tmp_path, fake_download, name):
    ds = load(name, data_dir=tmp_path, download=True)
    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
    assert set(fake_download) == set(TFDS_DATASETS[name][0].SOURCE_URLS)
    assert [len(y) for _, y in ds.splits().values()] == [54, 6, FAKE_TEST]
    expected_test = _fake_images(FAKE_TEST, (28, 28), 1000)
    test_pixels = np.round(ds.normalization.invert(ds.test[0])).astype(np.uint8)
    found = np.array([_identity(image) for image in test_pixels]) - 1000
    # TFDS shuffles records by key when writing: every example is there once, in TFDS's order.
    assert sorted(found) == list(range(FAKE_TEST))
    np.testing.assert_array_equal(test_pixels[..., 0], expected_test[found])
    np.testing.assert_array_equal(ds.test[1], _fake_labels(FAKE_TEST, 1000, 10)[found])
    # The folder is an ordinary TFDS dataset: TFDS's own registered builder reads it.
    source = tfds.data_source(name, split="train", data_dir=os.fspath(tmp_path))
    assert len(source) == FAKE_TRAIN
    assert source[0]["image"].shape == (28, 28, 1)


def test_cifar_is_prepared_without_tensorflow_with_names_ids_and_channel_order(tmp_path, fake_download):
    ds = load("cifar10", data_dir=tmp_path, download=True)
    assert fake_download == list(Cifar10.SOURCE_URLS)
    assert ds.class_names == tuple(CIFAR10_NAMES)  # from batches.meta.txt, as TFDS does
    assert [len(y) for _, y in ds.splits().values()] == [54, 6, FAKE_TEST]
    test_pixels = np.round(ds.normalization.invert(ds.test[0])).astype(np.uint8)
    found = np.array([_identity(image) for image in test_pixels]) - 1000
    assert sorted(found) == list(range(FAKE_TEST))
    _, images, labels = _cifar_batches(FAKE_TEST, 1000, [10])
    np.testing.assert_array_equal(test_pixels, images[found])  # planes turned into (H, W, C) correctly
    np.testing.assert_array_equal(ds.test[1], labels[found, 0])
    record = tfds.data_source("cifar10", split="test", data_dir=os.fspath(tmp_path))[0]
    assert record["id"].decode().startswith("test_")

    ds100 = load("cifar100", data_dir=tmp_path, download=True)
    assert ds100.num_classes == 100
    assert ds100.class_names[:2] == ("fine0", "fine1")
    builder = Cifar100(data_dir=os.fspath(tmp_path))
    assert builder.info.features["coarse_label"].names[:2] == ["coarse0", "coarse1"]


def test_source_urls_are_the_ones_tfds_registered_checksums_for():
    for builder_cls, *_ in TFDS_DATASETS.values():
        assert set(builder_cls.SOURCE_URLS) <= set(builder_cls.url_infos), builder_cls.name
        assert builder_cls.VERSION == tfds.builder_cls(builder_cls.name).VERSION


def test_idx_reader_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "images.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 5, 28, 28) + bytes(28 * 28 * 4))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


# ------------------------------------------------------------------------------------------------- offline


@pytest.mark.parametrize("name", sorted(TFDS_DATASETS))
def test_offline_fails_fast_with_a_message_that_says_how_to_prepare(tmp_path, offline, name):
    builder_cls, _, _, host = TFDS_DATASETS[name]
    data_dir = tmp_path / "data"
    start = time.perf_counter()
    with pytest.raises(DatasetNotPreparedError) as error:
        load(name, data_dir=data_dir)  # download=None: probe, then give up
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    message = str(error.value)
    version_dir = data_dir / name / str(builder_cls.VERSION)
    assert f"data_dir={data_dir}" in message  # where it looked
    assert f"{version_dir}/" in message and "it does not exist" in message  # what is missing
    assert f"{host}, where its files come from, could not be reached within 2 s" in message
    # how to prepare it elsewhere: the exact command, and that the folder can be copied over
    assert f"dlfund.data.load({name!r}, data_dir={os.fspath(data_dir)!r}, download=True)" in message
    assert f"copy the folder {data_dir / name}" in message
    assert "pass download=True (on the command line: dlfund train --download)" in message
    assert f"dlfund train --dataset {name} --download --data-dir {os.fspath(data_dir)}" in message
    assert len(offline) == 1  # one probe: all of a dataset's files come from one server
    assert not data_dir.exists()  # nothing written


def test_download_false_never_probes_and_fails_at_once(tmp_path, monkeypatch):
    def no_probe(url, timeout=None):
        raise AssertionError("download=False must not probe the network")

    monkeypatch.setattr(network, "reachable", no_probe)
    start = time.perf_counter()
    with pytest.raises(DatasetNotPreparedError, match="was not downloaded: download=False"):
        load("mnist", data_dir=tmp_path, download=False)
    assert time.perf_counter() - start < 5.0
    assert list(tmp_path.iterdir()) == []


def test_reachable_host_means_download(tmp_path, monkeypatch, fake_download):
    monkeypatch.setattr(network, "reachable", lambda url, timeout=None: True)
    ds = load("kmnist", data_dir=tmp_path)  # download=None
    assert len(ds.test[1]) == FAKE_TEST
    assert fake_download  # it downloaded


def test_prepared_dataset_is_used_offline_without_probing(tmp_path, monkeypatch, fake_download):
    first = load("mnist", data_dir=tmp_path, download=True)

    def no_probe(url, timeout=None):
        raise AssertionError("a prepared dataset needs no network")

    monkeypatch.setattr(network, "reachable", no_probe)
    for download in (None, False):
        again = load("mnist", data_dir=tmp_path, download=download)
        np.testing.assert_array_equal(again.train[0], first.train[0])


def test_bad_download_argument_is_rejected_before_touching_disk(tmp_path):
    with pytest.raises(TypeError, match="download must be None, True or False"):
        load("mnist", data_dir=tmp_path, download="yes")
    assert list(tmp_path.iterdir()) == []


def test_bundled_datasets_need_no_download(tmp_path, offline):
    ds = load("iris", data_dir=tmp_path, download=False)
    assert len(ds.test[1]) == 30
    assert offline == []


def test_half_copied_folder_offline_is_reported_and_kept(tmp_path, offline):
    version_dir = tmp_path / "mnist" / "3.0.1"
    version_dir.mkdir(parents=True)
    (version_dir / "mnist-train.array_record-00000-of-00001").write_bytes(b"half a copy")
    with pytest.raises(DatasetNotPreparedError, match="exists but is incomplete"):
        load("mnist", data_dir=tmp_path)
    assert (version_dir / "mnist-train.array_record-00000-of-00001").read_bytes() == b"half a copy"


def test_failed_download_is_reported_and_its_partial_files_removed(tmp_path, monkeypatch, fake_sources):
    def failing(self, url, destination_path, verify=True):
        (destination_path / url.rsplit("/", 1)[-1]).write_bytes(b"the first bytes")
        raise ConnectionError("network is down")

    monkeypatch.setattr(downloader._Downloader, "_sync_download", failing)
    with pytest.raises(DatasetNotPreparedError, match=r"preparing it failed \(ConnectionError: network is down\)"):
        load("mnist", data_dir=tmp_path, download=True)
    assert partial_downloads(Mnist(data_dir=os.fspath(tmp_path)), tmp_path) == []
    assert [p for p in tmp_path.rglob("*") if ".tmp." in p.name] == []
    assert not (tmp_path / "mnist" / "3.0.1").exists()


def test_leftovers_of_a_killed_download_do_not_poison_the_next_one(tmp_path, fake_download):
    # What a process killed mid-download leaves: TFDS's temporary folders, here one of the new and one of
    # the legacy layout, and an unfinished preparation folder.
    url = Mnist.SOURCE_URLS[0]
    leftovers = [
        tmp_path / "downloads" / "mnist" / f"{resource.get_dl_fname(url)}.tmp.{uuid.uuid4().hex}",
        tmp_path / "downloads" / f"{resource.get_dl_fname(url)}.tmp.{uuid.uuid4().hex}",
        tmp_path / "mnist" / "incomplete.ABC123_3.0.1",
    ]
    for folder in leftovers:
        folder.mkdir(parents=True)
        (folder / "part").write_bytes(b"\x1f\x8b half a gzip")
    # Another dataset's download in progress (another process holds its lock) must be left alone.
    foreign = (
        tmp_path / "downloads" / "cifar10" / f"{resource.get_dl_fname(Cifar10.SOURCE_URLS[0])}.tmp.{uuid.uuid4().hex}"
    )
    foreign.mkdir(parents=True)
    assert len(partial_downloads(Mnist(data_dir=os.fspath(tmp_path)), tmp_path)) == 2
    assert len(incomplete_dirs(Mnist(data_dir=os.fspath(tmp_path)))) == 1

    ds = load("mnist", data_dir=tmp_path, download=True)
    assert len(ds.test[1]) == FAKE_TEST
    assert not any(folder.exists() for folder in leftovers)
    assert foreign.is_dir()


# ----------------------------------------------------------------------------------------- damaged files


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "delete":
        path.unlink()


@pytest.mark.parametrize("how", ["truncate", "garbage", "delete"])
def test_damaged_prepared_file_gives_a_clear_error_and_deletes_nothing(tmp_path, fake_download, offline, how):
    load("mnist", data_dir=tmp_path, download=True)
    version_dir = tmp_path / "mnist" / "3.0.1"
    _damage(version_dir / "mnist-train.array_record-00000-of-00001", how)
    before = _snapshot(tmp_path)
    with pytest.raises(CorruptDatasetError) as error:
        load("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert f"Could not read dataset 'mnist' from {version_dir}" in message
    assert f"Delete the folder {version_dir} and load the dataset again" in message
    assert "dlfund deleted nothing" in message
    assert _snapshot(tmp_path) == before
    assert offline == []  # a prepared (if damaged) dataset is not downloaded again behind the user's back


def test_damaged_bundled_dataset_is_reported_too(tmp_path):
    load("iris", data_dir=tmp_path)
    _damage(tmp_path / "iris" / "1.0.0" / "iris-test.array_record-00000-of-00001", "truncate")
    before = _snapshot(tmp_path)
    with pytest.raises(CorruptDatasetError, match="Delete the folder"):
        load("iris", data_dir=tmp_path)
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------ the probe itself


def test_probe_finds_a_listening_server_and_not_a_closed_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert network.reachable(f"http://127.0.0.1:{port}/file.gz", timeout=2.0)
    # The server is closed now: the same port refuses.
    assert not network.reachable(f"http://127.0.0.1:{port}/file.gz", timeout=2.0)


def test_probe_is_bounded_even_when_the_name_lookup_hangs(monkeypatch):
    def stalled_lookup(*args, **kwargs):
        time.sleep(3.0)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", stalled_lookup)
    start = time.perf_counter()
    assert not network.reachable("https://storage.googleapis.com/cvdf-datasets/mnist/x.gz", timeout=0.3)
    assert time.perf_counter() - start < 1.0


def test_probe_goes_to_the_proxy_when_one_is_configured(monkeypatch):
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    assert network.endpoint("https://www.cs.toronto.edu/~kriz/c.tar.gz") == ("www.cs.toronto.edu", 443)
    assert network.endpoint("http://codh.rois.ac.jp/kmnist/x.gz") == ("codh.rois.ac.jp", 80)
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert network.endpoint("https://www.cs.toronto.edu/~kriz/c.tar.gz") == ("proxy.internal", 3128)
    monkeypatch.setenv("no_proxy", "www.cs.toronto.edu")
    assert network.endpoint("https://www.cs.toronto.edu/~kriz/c.tar.gz") == ("www.cs.toronto.edu", 443)
