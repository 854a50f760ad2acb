"""Tests for your own data: ``dlfund.data.from_arrays`` and ``dlfund.data.image_folder``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlfund.data import from_arrays, image_folder


def _unique_rows(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """(n, *shape) float64 data whose first value identifies the example (its index), the rest random."""
    x = np.random.default_rng(seed).normal(loc=5.0, scale=3.0, size=(n, *shape))
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


def _source_index(ds, x: np.ndarray) -> np.ndarray:
    return np.round(ds.normalization.invert(x).reshape(len(x), -1)[:, 0]).astype(int)


# -------------------------------------------------------------------------------------------------- from_arrays


def test_from_arrays_classification_splits_and_normalization():
    x = _unique_rows(200, (6,))
    y = np.arange(200) % 4
    ds = from_arrays(x, y, name="toy", class_names=["a", "b", "c", "d"], seed=5)
    assert ds.name == "toy"
    assert ds.task == "classification"
    assert ds.num_classes == 4
    assert ds.class_names == ("a", "b", "c", "d")
    assert ds.input_shape == (6,)
    # test: 20% of all; val: 10% of the rest; train: what remains.
    assert [len(y) for _, y in ds.splits().values()] == [144, 16, 40]
    indices = {split: _source_index(ds, x_split) for split, (x_split, _) in ds.splits().items()}
    assert sorted(np.concatenate(list(indices.values()))) == list(range(200))  # disjoint, complete
    for split, (x_split, y_split) in ds.splits().items():
        assert x_split.dtype == np.float32 and y_split.dtype == np.int32
        np.testing.assert_array_equal(y_split, y[indices[split]])
        assert np.bincount(y_split, minlength=4).min() == np.bincount(y_split, minlength=4).max()  # stratified
        np.testing.assert_allclose(ds.normalization.invert(x_split), x[indices[split]], rtol=1e-5, atol=1e-4)
    # Per channel on (N, F) is per feature, and the statistics come from train only.
    train_raw = x[indices["train"]]
    np.testing.assert_allclose(ds.normalization.mean, train_raw.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(ds.normalization.std, train_raw.std(axis=0), rtol=1e-5)
    assert not np.allclose(ds.normalization.mean, x.mean(axis=0), rtol=1e-5)


def test_from_arrays_test_split_is_fixed_and_val_follows_the_seed():
    x, y = _unique_rows(100, (3,)), np.arange(100) % 2
    a, b, c = from_arrays(x, y, seed=0), from_arrays(x, y, seed=0), from_arrays(x, y, seed=1)
    np.testing.assert_array_equal(a.train[0], b.train[0])
    assert sorted(_source_index(a, a.test[0])) == sorted(_source_index(c, c.test[0]))
    assert sorted(_source_index(a, a.val[0])) != sorted(_source_index(c, c.val[0]))
    assert a.class_names == ("0", "1")


@pytest.mark.parametrize(
    ("normalize", "mean_shape"), [("per_channel", (1, 1, 3)), ("per_feature", (4, 5, 3)), (None, ())]
)
def test_from_arrays_normalize_modes_on_images(normalize, mean_shape):
    x = np.random.default_rng(1).integers(0, 256, size=(60, 4, 5, 3)).astype(np.uint8)
    y = np.arange(60) % 3
    ds = from_arrays(x, y, normalize=normalize)
    assert ds.input_shape == (4, 5, 3)
    assert ds.normalization.mean.shape == mean_shape
    if normalize is None:
        assert ds.normalization.scale == 1.0
        assert set(np.unique(np.concatenate([x for x, _ in ds.splits().values()]))) <= set(range(256))
    else:
        axes = (0, 1, 2) if normalize == "per_channel" else (0,)
        np.testing.assert_allclose(ds.train[0].mean(axis=axes), 0.0, atol=1e-5)
        np.testing.assert_allclose(ds.train[0].std(axis=axes), 1.0, rtol=1e-4)


def test_from_arrays_regression_keeps_targets_as_given():
    x = _unique_rows(50, (2,))
    y = np.linspace(-1, 1, 50) * 100
    ds = from_arrays(x, y, val_fraction=0.2)
    assert ds.task == "regression"
    assert ds.num_classes is None and ds.class_names == ()
    assert ds.target_normalization is None
    assert [len(t) for _, t in ds.splits().values()] == [32, 8, 10]
    for x_split, y_split in ds.splits().values():
        assert y_split.dtype == np.float32
        np.testing.assert_allclose(y_split, y[_source_index(ds, x_split)], rtol=1e-6)
    # Float labels as classes when asked.
    classes = from_arrays(x, (np.arange(50) % 2).astype(np.float64), task="classification")
    assert classes.num_classes == 2 and classes.train[1].dtype == np.int32


def test_from_arrays_one_dimensional_and_bool_inputs():
    ds = from_arrays(np.arange(40, dtype=np.int64), np.arange(40) % 2)
    assert ds.input_shape == ()
    assert ds.normalization.mean.shape == ()
    flags = from_arrays(np.eye(40, 3, dtype=bool), np.arange(40) % 2)
    assert flags.train[0].dtype == np.float32


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (np.zeros((10, 2)), np.zeros(9, int), {}, ValueError, "x has 10 examples but y has 9 labels"),
        (np.zeros((10, 2)), np.array(["cat", "dog"] * 5), {}, TypeError, "np.unique"),
        (np.array([["a", "b"]] * 10), np.zeros(10, int), {}, TypeError, "x must hold real numbers"),
        (np.r_[np.zeros((3, 2)), [[np.nan, 0]], np.zeros((6, 2))], np.zeros(10, int), {}, ValueError, "example 3"),
        (np.r_[np.zeros((3, 2)), [[np.inf, 0]], np.zeros((6, 2))], np.zeros(10, int), {}, ValueError, "NaN/Inf"),
        (np.zeros((10, 2)), np.r_[np.zeros(9), np.inf], {}, ValueError, "y contains NaN/Inf"),
        (np.zeros((10, 2)), np.r_[np.zeros(9, int), -1], {}, ValueError, "class ids >= 0"),
        (np.zeros((10, 2)), np.r_[np.zeros(9, int), 2], {"class_names": ["a", "b"]}, ValueError, "label 2"),
        (np.zeros((10, 2)), np.full(10, 0.5), {"task": "classification"}, ValueError, "non-integer"),
        (np.zeros((10, 2)), np.zeros(10), {"class_names": ["a"], "task": "regression"}, ValueError, "class_names"),
        (np.zeros((10, 2)), np.zeros((10, 2), int), {}, ValueError, r"y must have shape \(N,\)"),
        (np.zeros((0, 2)), np.zeros(0, int), {}, ValueError, "x is empty"),
        (np.float32(1.0), np.zeros(1, int), {}, ValueError, "leading example axis"),
        (np.zeros((10, 2)), np.zeros(10, int), {"normalize": "per_pixel"}, ValueError, "normalize must be one of"),
        (np.zeros((10, 2)), np.zeros(10, int), {"test_fraction": 1.0}, ValueError, "test_fraction"),
        (np.zeros((10, 2)), np.zeros(10, int), {"val_fraction": -0.1}, ValueError, "val_fraction"),
        (np.zeros((10, 2)), np.zeros(10, int), {"task": "ranking"}, ValueError, "task must be"),
        (np.zeros((2, 2)), np.zeros(2, int), {"test_fraction": 0.5, "val_fraction": 0.9}, ValueError, "no training"),
    ],
)
def test_from_arrays_rejects_bad_input_with_a_clear_message(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        from_arrays(x, y, **kwargs)


# ------------------------------------------------------------------------------------------------- image_folder


def _save(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _grey(value: int, height: int = 4, width: int = 6) -> np.ndarray:
    pixels = np.random.default_rng(value).integers(0, 256, (height, width), dtype=np.uint8)
    pixels[0, 0] = value  # identifies the image
    return pixels


@pytest.fixture
def pets(tmp_path) -> Path:
    """pets/{dog,cat}/*.png: 7 dogs and 7 cats, 4x6 greyscale, plus files that must be ignored."""
    root = tmp_path / "pets"
    for k in range(7):
        _save(root / "dog" / f"dog{k}.png", _grey(100 + k))
        _save(root / "cat" / "nested" / f"cat{k}.png", _grey(10 + k))  # images below a class folder count
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()
    return root


def test_image_folder_reads_classes_from_sorted_sub_folders(pets):
    ds = image_folder(pets, test_fraction=2 / 14, val_fraction=0.0)
    assert ds.name == "pets"
    assert ds.class_names == ("cat", "dog")
    assert ds.input_shape == (4, 6, 1)
    assert [len(y) for _, y in ds.splits().values()] == [12, 0, 2]
    assert ds.normalization.mean.shape == (1, 1, 1)
    assert ds.normalization.scale == pytest.approx(1 / 255)
    for x, y in ds.splits().values():
        pixels = np.round(ds.normalization.invert(x)).astype(np.uint8)
        for image, label in zip(pixels, y, strict=True):
            value = int(image[0, 0, 0])
            assert label == (0 if value < 100 else 1)  # cats are 10.., dogs 100..
            np.testing.assert_array_equal(image[..., 0], _grey(value))
    np.testing.assert_allclose(ds.train[0].mean(), 0.0, atol=1e-5)


def test_image_folder_colour_and_mixed_modes_give_rgb(tmp_path):
    root = tmp_path / "shapes"
    colour = np.zeros((5, 5, 3), np.uint8)
    colour[..., 0] = 200
    for k in range(4):
        _save(root / "red" / f"{k}.png", colour)
        _save(root / "grey" / f"{k}.png", np.full((5, 5), 50 + k, np.uint8))
    ds = image_folder(root, val_fraction=0.0)
    assert ds.input_shape == (5, 5, 3)
    assert ds.normalization.mean.shape == (1, 1, 3)
    stored = np.round(np.concatenate([ds.normalization.invert(x) for x, _ in ds.splits().values()]))
    labels = np.concatenate([y for _, y in ds.splits().values()])
    np.testing.assert_array_equal(stored[labels == 1][:, 0, 0], [[200, 0, 0]] * 4)  # "red" sorts after "grey"
    assert (stored[labels == 0][..., 0] == stored[labels == 0][..., 2]).all()  # grey as equal R, G, B


def test_image_folder_mixed_sizes_need_image_size(tmp_path):
    root = tmp_path / "mixed"
    for k in range(3):
        _save(root / "a" / f"{k}.png", _grey(k, 4, 6))
        _save(root / "b" / f"{k}.png", _grey(k, 4, 6) if k else _grey(k, 5, 5))
    with pytest.raises(ValueError) as error:
        image_folder(root)
    message = str(error.value)
    assert "a/0.png is 6x4" in message and "b/0.png is 5x5" in message and "image_size=(height, width)" in message
    ds = image_folder(root, image_size=(3, 7), val_fraction=0.0, test_fraction=0.0)
    assert ds.input_shape == (3, 7, 1)
    assert len(ds.train[1]) == 6
    assert image_folder(root, image_size=8, val_fraction=0.0).input_shape == (8, 8, 1)
    # a NumPy integer is a side length like a Python int (read from an array or a config file)
    assert image_folder(root, image_size=np.int64(8), val_fraction=0.0).input_shape == (8, 8, 1)
    assert image_folder(root, image_size=(np.int32(3), 7), val_fraction=0.0).input_shape == (3, 7, 1)


def test_image_folder_rejects_bad_layouts_with_a_clear_message(tmp_path, pets):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        image_folder(tmp_path / "nowhere")
    single = tmp_path / "single"
    _save(single / "only" / "0.png", _grey(0))
    with pytest.raises(ValueError, match="at least two"):
        image_folder(single)
    (pets / "bird").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*bird holds no images"):
        image_folder(pets)
    (pets / "bird").rmdir()
    (pets / "dog" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read .*broken\.png"):
        image_folder(pets)
    (pets / "dog" / "broken.png").unlink()
    for bad in (0, (4,), (4, -1), "4x6", (4.0, 6), 8.0, True, np.int64(-3)):
        with pytest.raises(ValueError, match="image_size must be"):
            image_folder(pets, image_size=bad)


def test_image_folder_truncated_image_is_named(tmp_path, pets):
    from PIL import Image

    path = pets / "dog" / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])  # the header parses, the pixel data is cut short
    with pytest.raises(ValueError, match=r"big\.png"):
        image_folder(pets, image_size=(4, 6))


def test_image_folder_scales_16_bit_greyscale_and_refuses_pixels_without_a_range(tmp_path):
    # Pillow's convert("L") clips 16-bit pixels at 255: dark and bright classes both read as all white
    root = tmp_path / "scans"
    for k in range(4):
        _save(root / "dark" / f"{k}.png", np.full((4, 4), 1000 + k, np.uint16))
        _save(root / "bright" / f"{k}.png", np.full((4, 4), 60000, np.uint16))
        _save(root / "red" / f"{k}.png", np.tile(np.array([200, 0, 0], np.uint8), (4, 4, 1)))
    only_grey = tmp_path / "grey_only"
    for k in range(4):
        _save(only_grey / "dark" / f"{k}.png", np.full((4, 4), 1000, np.uint16))
        _save(only_grey / "bright" / f"{k}.png", np.full((4, 4), 65535, np.uint16))
    ds = image_folder(only_grey, val_fraction=0.0, test_fraction=0.0, normalize=None)
    assert ds.input_shape == (4, 4, 1)
    stored = np.round(ds.normalization.invert(ds.train[0]))
    assert {int(v) for v in np.unique(stored[ds.train[1] == 0])} == {255}  # "bright" sorts first
    assert {int(v) for v in np.unique(stored[ds.train[1] == 1])} == {4}  # round(1000 / 257)
    mixed = image_folder(root, val_fraction=0.0, test_fraction=0.0, normalize=None)  # 16-bit grey beside RGB
    stored = np.round(mixed.normalization.invert(mixed.train[0]))
    assert mixed.input_shape == (4, 4, 3)
    assert {int(v) for v in np.unique(stored[mixed.train[1] == mixed.class_names.index("dark")])} == {4}
    _save(root / "dark" / "float.tif", np.full((4, 4), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"float\.tif has float pixels \(Pillow mode 'F'\)"):
        image_folder(root)


def test_hidden_means_hidden_below_the_folder_given(tmp_path, pets, monkeypatch):
    from dlfund.data.folders import image_files

    _save(pets / "cat" / ".cache" / "thumb.png", _grey(200))  # a hidden folder inside a class: skipped
    assert len(image_folder(pets, val_fraction=0.0, test_fraction=0.0).train[1]) == 14
    assert len(image_files(pets / "cat")) == 7
    # a hidden folder above the one given (~/.data/pets) or a relative path with ".." is the user's choice
    inside = tmp_path / ".data" / "pets"
    inside.parent.mkdir()
    pets.rename(inside)
    assert len(image_files(inside / "cat")) == 7
    assert image_folder(inside, val_fraction=0.0).class_names == ("cat", "dog")
    monkeypatch.chdir(inside / "dog")
    assert len(image_files(Path("..") / "cat")) == 7


def test_a_dataset_with_many_classes_has_a_one_line_repr():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(100), 5)
    ds = from_arrays(rng.normal(size=(500, 3)), y, name="many")
    text = repr(ds)
    assert "100 classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ..." in text and "99" not in text.split("classes:")[1]
    assert len(text) < 200 and "\n" not in text
