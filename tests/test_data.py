"""Tests for dlfund.data: the offline datasets, their splits, normalization and on-disk preparation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlfund.data
from dlfund.data import DATASETS, Dataset, Normalization, load
from dlfund.data.builders.base import BundledBuilder
from dlfund.data.builders.digits import Digits
from dlfund.data.preparation import incomplete_dirs, resolve_data_dir
from dlfund.data.splitting import stratified_split

REPO_ROOT = Path(__file__).resolve().parents[1]

# name -> (N, input_shape, num_classes, (train, val, test) sizes at val_fraction=0.1)
EXPECTED = {
    "digits": (1797, (8, 8, 1), 10, (1294, 144, 359)),
    "breast_cancer": (569, (30,), 2, (409, 46, 114)),
}


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory) -> Path:
    """A data_dir in which both datasets are already prepared, shared by the tests that only read."""
    data_dir = tmp_path_factory.mktemp("tfds")
    for name in EXPECTED:
        load(name, data_dir=data_dir)
    return data_dir


@pytest.fixture(scope="module")
def raw() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's own arrays: name -> (x (N, *input_shape) as stored, y (N,) in dlfund's encoding)."""
    from sklearn.datasets import load_breast_cancer, load_digits

    digits = load_digits()
    cancer = load_breast_cancer()
    assert list(cancer.target_names) == ["malignant", "benign"]  # scikit-learn: 0 = malignant
    return {
        "digits": (digits.images[..., None].astype(np.float32), digits.target),
        "breast_cancer": (cancer.data.astype(np.float32), 1 - cancer.target),
    }


def source_indices(ds: Dataset, x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each row of a split's x (n, ...), the index of the scikit-learn example it came from (n,)."""
    found = ds.normalization.invert(x).reshape(len(x), -1).astype(np.float64)
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    # Nearest neighbour in standardized units, so that no single large-valued feature decides the match.
    scale = ref.std(axis=0) + 1e-12
    found, ref = found / scale, ref / scale
    dist2 = (found**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2 * found @ ref.T
    index = dist2.argmin(axis=1)
    np.testing.assert_allclose(found, ref[index], rtol=1e-5, atol=1e-5)
    return index


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_dtypes_labels_and_sizes(prepared_dir, name):
    n, input_shape, num_classes, sizes = EXPECTED[name]
    ds = load(name, data_dir=prepared_dir)
    assert isinstance(ds, Dataset)
    assert ds.name == name
    assert ds.input_shape == input_shape
    assert ds.num_classes == num_classes
    assert list(ds.splits()) == ["train", "val", "test"]
    for (x, y), size in zip(ds.splits().values(), sizes, strict=True):
        assert x.shape == (size, *input_shape)
        assert x.dtype == np.float32
        assert y.shape == (size,)
        assert y.dtype == np.int32
        # Stratified: every class appears in every split.
        assert set(np.unique(y)) == set(range(num_classes))
        assert np.isfinite(x).all()
    assert sum(sizes) == n


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_splits_are_disjoint_and_cover_the_dataset_with_correct_labels(prepared_dir, raw, name):
    ds = load(name, data_dir=prepared_dir)
    x_raw, y_raw = raw[name]
    indices = {split: source_indices(ds, x, x_raw) for split, (x, _) in ds.splits().items()}
    everything = np.concatenate(list(indices.values()))
    assert len(everything) == len(x_raw)
    assert np.array_equal(np.sort(everything), np.arange(len(x_raw)))  # each example exactly once
    for split, (_, y) in ds.splits().items():
        assert np.array_equal(y, y_raw[indices[split]])


def test_test_split_is_pinned(prepared_dir, raw):
    # The test set must never change between versions: these are its scikit-learn indices, hashed.
    ds = load("digits", data_dir=prepared_dir)
    test_indices = np.sort(source_indices(ds, ds.test[0], raw["digits"][0]))
    assert hashlib.sha256(test_indices.astype("<i8").tobytes()).hexdigest()[:16] == "93c0a54086a22c99"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_normalization_is_fitted_on_train_only(prepared_dir, raw, name):
    ds = load(name, data_dir=prepared_dir)
    x_raw, _ = raw[name]
    x_train = ds.train[0]
    train_raw = x_raw[source_indices(ds, x_train, x_raw)].astype(np.float64)
    if name == "digits":
        axes, scale = (0, 1, 2), 1 / 16
        assert ds.normalization.mean.shape == (1, 1, 1)  # one channel, broadcasts against (8, 8, 1)
    else:
        axes, scale = (0,), 1.0
        assert ds.normalization.mean.shape == (30,)
    # Recomputed from scikit-learn's raw values of exactly the train examples.
    expected_mean = (train_raw * scale).mean(axis=axes, keepdims=True)[0]
    expected_std = (train_raw * scale).std(axis=axes, keepdims=True)[0]
    np.testing.assert_allclose(ds.normalization.mean, expected_mean, rtol=1e-5)
    np.testing.assert_allclose(ds.normalization.std, expected_std, rtol=1e-5)
    # ...and not from all the data: those statistics are measurably different.
    all_mean = (x_raw.astype(np.float64) * scale).mean(axis=axes, keepdims=True)[0]
    assert np.max(np.abs(ds.normalization.mean - all_mean) / (np.abs(all_mean) + 1e-6)) > 1e-3
    np.testing.assert_allclose(x_train.mean(axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=axes), 1.0, rtol=1e-4)
    # The transform used for val and test is the train one.
    for x in (ds.val[0], ds.test[0]):
        np.testing.assert_allclose(ds.normalization.apply(ds.normalization.invert(x)), x, atol=1e-5)


def test_digits_inverts_to_integer_ink_counts(prepared_dir):
    ds = load("digits", data_dir=prepared_dir)
    ink = ds.normalization.invert(ds.test[0])
    np.testing.assert_allclose(ink, np.round(ink), atol=1e-4)
    assert ink.min() > -1e-4
    assert ink.max() < 16 + 1e-4
    assert ds.normalization.scale == 1 / 16


def test_same_seed_same_arrays_other_seed_other_val_same_test(prepared_dir):
    a = load("digits", data_dir=prepared_dir, seed=0)
    b = load("digits", data_dir=prepared_dir, seed=0)
    c = load("digits", data_dir=prepared_dir, seed=1)
    for split in ("train", "val", "test"):
        for arr_a, arr_b in zip(a.splits()[split], b.splits()[split], strict=True):
            assert np.array_equal(arr_a, arr_b)
    np.testing.assert_array_equal(a.normalization.mean, b.normalization.mean)

    raw_val_a = a.normalization.invert(a.val[0]).reshape(len(a.val[0]), -1)
    raw_val_c = c.normalization.invert(c.val[0]).reshape(len(c.val[0]), -1)
    assert len(raw_val_a) == len(raw_val_c)
    shared = {row.tobytes() for row in np.round(raw_val_a).astype(np.int8)} & {
        row.tobytes() for row in np.round(raw_val_c).astype(np.int8)
    }
    assert len(shared) < len(raw_val_a) // 2  # a different seed picks mostly different examples
    assert np.array_equal(a.test[1], c.test[1])
    np.testing.assert_allclose(a.normalization.invert(a.test[0]), c.normalization.invert(c.test[0]), atol=1e-4)


def test_registry_lists_the_datasets():
    assert DATASETS.names() == [
        "breast_cancer",
        "cifar10",
        "cifar100",
        "digits",
        "digits_rows",
        "fashion_mnist",
        "iris",
        "kmnist",
        "mnist",
        "sines",
        "wine",
    ]


@pytest.mark.parametrize(
    ("name", "names"),
    [("digits", tuple(str(d) for d in range(10))), ("breast_cancer", ("benign", "malignant"))],
)
def test_class_names_per_dataset(prepared_dir, name, names):
    assert load(name, data_dir=prepared_dir).class_names == names


def test_breast_cancer_positive_class_is_malignant(prepared_dir):
    ds = load("breast_cancer", data_dir=prepared_dir)
    y = np.concatenate([y for _, y in ds.splits().values()])
    assert (y == 1).sum() == 212
    assert ds.class_names[1] == "malignant"
    # Independent of any encoding: malignant masses are larger (feature 0 is the mean radius).
    x = np.concatenate([ds.normalization.invert(x) for x, _ in ds.splits().values()])
    assert x[y == 1, 0].mean() > x[y == 0, 0].mean() + 3


def test_unknown_name_lists_known_names_before_touching_disk(tmp_path):
    with pytest.raises(ValueError, match="Known datasets: breast_cancer, cifar10, cifar100, digits, ") as error:
        load("digit", data_dir=tmp_path)
    assert "Did you mean 'digits'" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_names_are_normalized(prepared_dir):
    assert load("Breast-Cancer", data_dir=prepared_dir).name == "breast_cancer"


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_val_fraction_is_rejected_before_touching_disk(tmp_path, fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        load("digits", data_dir=tmp_path, val_fraction=fraction)
    assert list(tmp_path.iterdir()) == []


def test_zero_val_fraction_gives_an_empty_val_split(prepared_dir):
    ds = load("digits", data_dir=prepared_dir, val_fraction=0.0)
    assert ds.val[0].shape == (0, 8, 8, 1)
    assert ds.val[1].shape == (0,)
    assert len(ds.train[1]) == 1438


def test_repr_is_readable(prepared_dir):
    text = repr(load("breast_cancer", data_dir=prepared_dir))
    for part in ("'breast_cancer'", "train=409", "val=46", "test=114", "(N, 30)", "2 classes", "malignant"):
        assert part in text


def test_second_load_reuses_prepared_files(tmp_path, monkeypatch):
    first = load("digits", data_dir=tmp_path)
    files = {path: path.stat().st_mtime_ns for path in (tmp_path / "digits").rglob("*") if path.is_file()}
    assert any(path.name.startswith("digits-train.array_record") for path in files)

    def no_preparation(self, dl_manager):
        raise AssertionError("the dataset was prepared a second time")

    monkeypatch.setattr(BundledBuilder, "_split_generators", no_preparation)
    second = load("digits", data_dir=tmp_path)
    assert {path: path.stat().st_mtime_ns for path in files} == files
    assert np.array_equal(first.train[0], second.train[0])


def test_default_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DLFUND_DATA_DIR", str(tmp_path / "from_env"))
    load("breast_cancer")
    assert (tmp_path / "from_env" / "breast_cancer" / "1.0.0" / "dataset_info.json").is_file()

    monkeypatch.delenv("DLFUND_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir(None) == (tmp_path / "tensorflow_datasets").resolve()


def test_failed_preparation_leaves_nothing_behind(tmp_path, monkeypatch, prepared_dir):
    generate = BundledBuilder._generate_examples

    def failing(self, inputs, labels, positions):
        for count, example in enumerate(generate(self, inputs, labels, positions)):
            if count == 50:
                raise RuntimeError("interrupted")
            yield example

    monkeypatch.setattr(BundledBuilder, "_generate_examples", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        load("digits", data_dir=tmp_path)
    assert not (tmp_path / "digits" / "1.0.0").exists()
    assert incomplete_dirs(Digits(data_dir=os.fspath(tmp_path))) == []

    monkeypatch.setattr(BundledBuilder, "_generate_examples", generate)
    assert np.array_equal(load("digits", data_dir=tmp_path).test[0], load("digits", data_dir=prepared_dir).test[0])


def _run_python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_preparation_does_not_poison_a_later_load(tmp_path, prepared_dir):
    # A process killed outright (no cleanup runs) while writing the test split, after train was written.
    killed = _run_python(
        """
        import os, sys
        from dlfund.data.builders.base import BundledBuilder
        generate = BundledBuilder._generate_examples
        def dying(self, inputs, labels, positions):
            for count, example in enumerate(generate(self, inputs, labels, positions)):
                if len(positions) < 500 and count == 100:
                    os._exit(17)
                yield example
        BundledBuilder._generate_examples = dying
        import dlfund.data
        dlfund.data.load("digits", data_dir=sys.argv[1])
        """,
        str(tmp_path),
    )
    _, stderr = killed.communicate(timeout=60)
    assert killed.returncode == 17, stderr
    builder = Digits(data_dir=os.fspath(tmp_path))
    (leftover,) = incomplete_dirs(builder)
    assert any(path.name.startswith("digits-train.array_record") for path in leftover.iterdir())
    assert not (tmp_path / "digits" / "1.0.0").exists()

    ds = load("digits", data_dir=tmp_path)
    reference = load("digits", data_dir=prepared_dir)
    for split in ("train", "val", "test"):
        for arr, ref in zip(ds.splits()[split], reference.splits()[split], strict=True):
            assert np.array_equal(arr, ref)
    assert incomplete_dirs(builder) == []


def test_invalid_version_directory_is_rebuilt(tmp_path, prepared_dir):
    # A version directory that TFDS did not finish (here: data but no metadata) must not be "reused".
    version_dir = tmp_path / "digits" / "1.0.0"
    version_dir.mkdir(parents=True)
    (version_dir / "digits-train.array_record-00000-of-00001").write_bytes(b"truncated")
    ds = load("digits", data_dir=tmp_path)
    assert np.array_equal(ds.test[0], load("digits", data_dir=prepared_dir).test[0])
    assert (version_dir / "dataset_info.json").is_file()


def test_concurrent_preparation_in_two_processes(tmp_path, prepared_dir):
    # Without the lock the slower process fails: TFDS cannot rename its finished directory onto the other's.
    code = """
        import hashlib, sys
        import dlfund.data
        ds = dlfund.data.load("digits", data_dir=sys.argv[1])
        arrays = [a for split in ds.splits().values() for a in split]
        print(hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest())
    """
    processes = [_run_python(code, str(tmp_path)) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    reference = load("digits", data_dir=prepared_dir)
    expected = hashlib.sha256(b"".join(a.tobytes() for split in reference.splits().values() for a in split))
    assert [stdout.strip() for stdout, _ in outputs] == [expected.hexdigest()] * 2


def test_builders_are_tfds_datasets_readable_without_tensorflow(prepared_dir):
    import tensorflow_datasets as tfds

    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
    source = tfds.data_source("breast_cancer", split="test", data_dir=os.fspath(prepared_dir))
    record = source[0]
    assert record["features"].shape == (30,)
    assert record["features"].dtype == np.float32
    builder = Digits(data_dir=os.fspath(prepared_dir))
    assert builder.info.file_format.value == "array_record"
    assert "Alpaydin" in builder.info.citation
    assert builder.info.homepage.startswith("https://archive.ics.uci.edu/")
    assert builder.info.splits["test"].num_examples == 359


def test_public_api():
    assert set(dlfund.data.__all__) == {
        "augment",
        "load",
        "open_splits",
        "from_arrays",
        "image_folder",
        "persistence_mse",
        "Dataset",
        "Normalization",
        "SplitReader",
        "SplitReaders",
        "DATASETS",
        "DatasetNotPreparedError",
        "CorruptDatasetError",
    }
    for name in dlfund.data.__all__:
        assert getattr(dlfund.data, name).__doc__, name


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=200),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31),
)
def test_stratified_split_properties(labels, fraction, seed):
    labels = np.asarray(labels)
    kept, held = stratified_split(labels, fraction, seed)
    assert len(held) == round(fraction * len(labels))
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))
    for cls in np.unique(labels):
        in_class = (labels == cls).sum()
        assert abs((labels[held] == cls).sum() - fraction * in_class) < 1 + 1e-9
    again = stratified_split(labels, fraction, seed)
    assert np.array_equal(held, again[1])


def test_normalization_guards_constant_features():
    x = np.stack([np.linspace(0, 1, 10), np.full(10, 3.0), np.full(10, 1e4)], axis=1).astype(np.float32)
    norm = Normalization.fit(x, axis=(0,))
    assert norm.std[1] == 1.0 and norm.std[2] == 1.0
    z = norm.apply(x)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(z[:, 1:], 0.0, atol=1e-3)
    np.testing.assert_allclose(norm.invert(z), x, rtol=1e-6, atol=1e-6)
