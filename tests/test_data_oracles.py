"""Oracle tests for dlfund.data: the properties the docstrings promise, checked against independent computations.

Each test here was written against a one-line bug that the rest of the data tests let through (a mutation review:
the augmentation draws' distributions, the largest-remainder rule of the stratified split, what ``normalize=None``
and unsigned labels mean, reading non-square images). The random draws use fixed keys, so nothing here is flaky;
the tolerances are still several standard deviations wide, so that a change of PRNG implementation does not break
them either.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlfund.data import augment, from_arrays, image_folder, load
from dlfund.data.folders import read_images
from dlfund.data.splitting import stratified_split

KEY = jax.random.key(0)


def _apply(spec: str, x: np.ndarray, key: jax.Array = KEY) -> np.ndarray:
    return np.asarray(jax.jit(augment.get(spec))(key, x))


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation: the distributions of the per-example draws


def test_flip_probability_is_p_not_one_minus_p():
    # Swapping the branches of the select still flips half the images at p=0.5, the only p the other tests use.
    n = 2000
    x = np.broadcast_to(np.array([1.0, 2.0], np.float32).reshape(1, 1, 2, 1), (n, 1, 2, 1))
    for p in (0.2, 0.9):
        out = _apply(f"flip:{p}", x)
        flipped = out[:, 0, 0, 0] == 2.0
        assert ((out[:, 0, :, 0] == [2.0, 1.0]).all(axis=1) == flipped).all()  # mirrored or untouched, whole
        assert flipped.mean() == pytest.approx(p, abs=0.03)  # sd 0.009 at n=2000


def _cutout_centres(out: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The centre (cy, cx) of each example's zeroed square, from the rows and columns it covers (clipped)."""
    _, h, w, _ = out.shape
    centres = []
    for axis, length in ((2, h), (1, w)):
        covered = (out[..., 0] == 0).any(axis=axis)  # [B, length]
        start = covered.argmax(axis=1)
        stop = length - covered[:, ::-1].argmax(axis=1)
        # The square covers [c - size // 2, c - size // 2 + size): unclipped at the start, its start gives c;
        # clipped there (start 0), its stop does.
        centres.append(np.where(start > 0, start + size // 2, stop - size + size // 2))
    return centres[0], centres[1]


def test_cutout_centres_are_uniform_over_every_pixel_and_independent():
    # The docstring: the centre is uniform over all pixels, so squares are clipped at all four borders. A square whose
    # corner (not centre) is uniform, or whose row and column come from one key, still zeroes one clipped rectangle.
    h, w, size = 6, 10, 3
    x = np.ones((1024, h, w, 1), np.float32)
    out = _apply(f"cutout:{size}", x)
    assert ((out == 0) | (out == 1)).all()
    cy, cx = _cutout_centres(out, size)
    assert set(cy.tolist()) == set(range(h))
    assert set(cx.tolist()) == set(range(w))
    # Independent: all 60 (row, column) pairs occur (about 17 draws each).
    assert len(set(zip(cy.tolist(), cx.tolist(), strict=True))) == h * w
    # And the recovered centre reproduces the zeroed square exactly.
    rows, cols = np.arange(h), np.arange(w)
    in_rows = (rows >= cy[:, None] - size // 2) & (rows < cy[:, None] - size // 2 + size)
    in_cols = (cols >= cx[:, None] - size // 2) & (cols < cx[:, None] - size // 2 + size)
    np.testing.assert_array_equal(out[..., 0] == 0, in_rows[:, :, None] & in_cols[:, None, :])


def test_brightness_deltas_fill_the_symmetric_range():
    # A one-sided U[0, d] or a narrower U[-d/2, d/2] passes the "|delta| <= d, one per image" checks.
    x = np.zeros((1000, 1, 1, 1), np.float32)
    delta = _apply("brightness:0.2", x).ravel()
    assert delta.min() >= -0.2 and delta.max() <= 0.2
    assert delta.min() < -0.19 and delta.max() > 0.19
    assert abs(delta.mean()) < 0.01  # uniform on [-0.2, 0.2]: mean 0, sd of the mean 0.0037
    assert (delta < 0).mean() == pytest.approx(0.5, abs=0.05)


def test_contrast_factors_fill_the_symmetric_range():
    # Images of per-channel mean 0 and values -1, 1: the output is the factor itself, -factor, per image.
    x = np.broadcast_to(np.array([-1.0, 1.0], np.float32).reshape(1, 1, 2, 1), (1000, 1, 2, 1))
    out = _apply("contrast:0.2", x)
    factor = out[:, 0, 1, 0]
    np.testing.assert_allclose(out[:, 0, 0, 0], -factor, rtol=1e-6)
    assert factor.min() >= 0.8 - 1e-6 and factor.max() <= 1.2 + 1e-6
    assert factor.min() < 0.81 and factor.max() > 1.19
    assert (factor < 1).mean() == pytest.approx(0.5, abs=0.05)


def test_noise_is_independent_across_channels():
    # Noise drawn once per pixel and broadcast over the channels has the right mean and sd, and is not i.i.d.
    noise = _apply("noise:1", np.zeros((32, 4, 4, 3), np.float32))
    flat = noise.reshape(-1, 3)
    assert np.abs(np.corrcoef(flat.T) - np.eye(3)).max() < 0.15  # 512 pairs per channel: sd of r about 0.044
    assert flat.std(axis=0) == pytest.approx([1.0, 1.0, 1.0], rel=0.1)


def test_translate_is_crop_with_the_same_key():
    # Documented: translate(key, x, s) and random_crop(key, x, s) give the same output.
    x = np.random.default_rng(0).normal(size=(64, 5, 7, 2)).astype(np.float32)
    np.testing.assert_array_equal(_apply("translate:2", x), _apply("crop:2", x))


def test_ops_that_do_not_fit_a_tall_image():
    # The limit is the shorter side whichever it is; the other tests only use wide images (5 x 9).
    with pytest.raises(ValueError, match=r"'translate': max_shift 5 must be smaller than .* \(9x5\)"):
        augment.compose("translate:5", input_shape=(9, 5, 1))
    with pytest.raises(ValueError, match=r"'cutout': size 6 must be at most the image's shorter side \(9x5\)"):
        augment.compose("cutout:6", input_shape=(9, 5, 1))
    augment.compose(("translate:4", "cutout:5"), input_shape=(9, 5, 1))


# ---------------------------------------------------------------------------------------------------------------------
# stratified_split: the largest-remainder rule, exactly


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=120),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31),
)
def test_stratified_split_shares_are_the_largest_remainders(labels, fraction, seed):
    labels = np.asarray(labels)
    kept, held = stratified_split(labels, fraction, seed)
    # Sorted ascending and disjoint, as documented: the splits keep the dataset's order.
    assert (np.diff(held) > 0).all() and (np.diff(kept) > 0).all()
    assert not np.intersect1d(kept, held).size
    classes, counts = np.unique(labels, return_counts=True)
    quotas = fraction * counts
    got = np.array([(labels[held] == c).sum() for c in classes])
    rounded_up = got == np.floor(quotas) + 1
    assert (rounded_up | (got == np.floor(quotas))).all()  # every class gets floor or ceil of its quota
    remainders = quotas - np.floor(quotas)
    # Largest remainder: every class rounded up has a remainder at least as large as every class rounded down, and
    # among equal remainders the smaller label is rounded up first.
    for i in np.flatnonzero(rounded_up):
        for j in np.flatnonzero(~rounded_up):
            assert remainders[i] > remainders[j] or (remainders[i] == remainders[j] and i < j)


def test_stratified_split_rejects_holding_out_everything():
    # fraction 1 would leave nothing to train on; load and from_arrays check it themselves, the split does too.
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        stratified_split(np.zeros(10, np.int64), 1.0, 0)


def test_stratified_split_ties_go_to_the_smaller_label():
    # Two classes of two: quotas 0.5 and 0.5, one example to hold out; the docstring gives it to label 0.
    labels = np.array([1, 0, 1, 0])
    for seed in range(5):
        _, held = stratified_split(labels, 0.25, seed)
        assert labels[held].tolist() == [0]
    labels = np.repeat([2, 5, 7], 4)  # quotas 1.5 each, 4 to hold out: the one extra goes to label 2
    _, held = stratified_split(labels, 0.375, 0)
    assert [(labels[held] == c).sum() for c in (2, 5, 7)] == [2, 1, 1]


# ---------------------------------------------------------------------------------------------------------------------
# load / from_arrays / image_folder: stratification, normalization and labels


def test_load_carves_a_stratified_validation_split():
    # Every class of the stored train split gives its proportional share to val (within one example).
    ds = load("digits", val_fraction=0.2, seed=3)
    train, val = np.bincount(ds.train[1], minlength=10), np.bincount(ds.val[1], minlength=10)
    assert np.abs(val - 0.2 * (train + val)).max() < 1
    assert val.sum() == round(0.2 * (train + val).sum())


def test_from_arrays_validation_split_is_stratified_too():
    # 300 examples of 3 classes in proportions 1:2:3: test and val keep the proportions to within one example.
    y = np.repeat([0, 1, 2], [50, 100, 150])
    x = np.random.default_rng(0).normal(size=(300, 4))
    ds = from_arrays(x, y, test_fraction=0.2, val_fraction=0.25, seed=7)
    counts = {split: np.bincount(labels, minlength=3) for split, (_, labels) in ds.splits().items()}
    np.testing.assert_array_equal(counts["test"], [10, 20, 30])
    pool = counts["train"] + counts["val"]
    assert np.abs(counts["val"] - 0.25 * pool).max() < 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8, np.int64])
def test_unsigned_and_signed_integer_labels_are_classes(dtype):
    # uint8 labels are common (read from image files, TFDS); they are class ids like any other integers.
    y = (np.arange(40) % 4).astype(dtype)
    ds = from_arrays(np.arange(40.0)[:, None], y)
    assert ds.task == "classification" and ds.num_classes == 4 and ds.train[1].dtype == np.int32


def test_num_classes_counts_up_to_the_largest_label_even_when_one_is_missing():
    # Class ids are positions: labels {0, 1, 3} are 4 classes, one of them absent, not 3 (label 3 would be out of
    # range of a 3-way output layer).
    y = np.tile([0, 1, 3], 20)
    ds = from_arrays(np.arange(60.0)[:, None], y)
    assert ds.num_classes == 4 and ds.class_names == ("0", "1", "2", "3")
    assert max(labels.max() for _, labels in ds.splits().values()) == 3


def test_image_folder_without_normalization_still_scales_to_unit_range(tmp_path):
    # Documented: the 1/255 scale applies "also with normalize=None", so inputs are pixels / 255 in [0, 1].
    from PIL import Image

    values = {"a": [0, 51], "b": [204, 255]}
    for name, levels in values.items():
        (tmp_path / name).mkdir()
        for k, level in enumerate(levels * 2):
            Image.fromarray(np.full((2, 3), level, np.uint8)).save(tmp_path / name / f"{k}.png")
    ds = image_folder(tmp_path, normalize=None, test_fraction=0.0, val_fraction=0.0)
    x, y = ds.train
    assert ds.normalization.scale == pytest.approx(1 / 255)
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0)
    np.testing.assert_allclose(np.unique(x[y == 0]), [0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(np.unique(x[y == 1]), [0.8, 1.0], atol=1e-6)


def test_image_folder_resizes_images_of_the_transposed_size(tmp_path):
    # image_size=(3, 7) is 3 rows by 7 columns; images 7 rows by 3 columns (PIL size (3, 7)) must be resized too.
    from PIL import Image

    for name, level in (("a", 10), ("b", 200)):
        (tmp_path / name).mkdir()
        for k in range(3):
            Image.fromarray(np.full((7, 3), level + k, np.uint8)).save(tmp_path / name / f"{k}.png")
    ds = image_folder(tmp_path, image_size=(3, 7), test_fraction=0.0, val_fraction=0.0, normalize=None)
    assert ds.input_shape == (3, 7, 1) and ds.train[0].shape == (6, 3, 7, 1)
    np.testing.assert_allclose(ds.train[0][ds.train[1] == 0].max() * 255, 12, atol=1e-3)


def test_from_arrays_finds_nan_in_any_feature():
    # The existing checks put the NaN in the first feature; a check of one column would pass this one, and the NaN
    # would then turn the whole feature's statistics, and every example, into NaN.
    x = np.ones((20, 4, 4, 3))
    x[7, 3, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf in 1 examples \(first: example 7\)"):
        from_arrays(x, np.arange(20) % 2)


def test_read_images_resizes_to_height_by_width(tmp_path):
    # A model input of (2, 5, 1): every image comes back 2 rows by 5 columns, whichever its own size.
    from PIL import Image

    ramp = np.tile(np.arange(0, 250, 50, dtype=np.uint8), (2, 1))  # 2 x 5, values grow along the columns
    Image.fromarray(ramp).save(tmp_path / "same.png")
    Image.fromarray(np.repeat(np.repeat(ramp, 4, axis=0), 4, axis=1)).save(tmp_path / "big.png")  # 8 x 20
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(tmp_path / "rgb.png")
    # 5 rows by 2 columns: (2, 5) as PIL's (width, height), the transposed size, must be resized too.
    Image.fromarray(np.full((5, 2), 7, np.uint8)).save(tmp_path / "tall.png")
    files = [tmp_path / "same.png", tmp_path / "big.png", tmp_path / "rgb.png", tmp_path / "tall.png"]
    images = read_images(files, (2, 5, 1))
    assert images.shape == (4, 2, 5, 1) and images.dtype == np.uint8
    assert (images[3] == 7).all()
    np.testing.assert_array_equal(images[0, ..., 0], ramp)
    np.testing.assert_array_equal(images[2, ..., 0], ramp)  # RGB with equal channels reads as the same grey
    assert (np.diff(images[1, ..., 0].astype(int), axis=1) > 0).all()  # still increasing left to right
    # Bilinear: a 2 x 2 image of columns 0 and 200 shrinks to their average, not to one of them (nearest).
    Image.fromarray(np.array([[0, 200], [0, 200]], np.uint8)).save(tmp_path / "halves.png")
    assert read_images([tmp_path / "halves.png"], (1, 1, 1)).item() == 100
    colour = read_images(files[:1], (2, 5, 3))
    assert colour.shape == (1, 2, 5, 3) and (colour[0] == ramp[..., None]).all()


def test_image_folder_skips_hidden_image_files_and_lists_files_sorted(tmp_path):
    # macOS leaves "._name.png" AppleDouble files beside copied images: hidden, and not images at all.
    from PIL import Image

    from dlfund.data.folders import image_files

    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        for k in (3, 1, 4, 0, 2):
            Image.fromarray(np.full((2, 2), k, np.uint8)).save(tmp_path / name / f"img{k}.png")
    (tmp_path / "a" / "._img0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "b" / ".thumb.png")
    ds = image_folder(tmp_path, test_fraction=0.0, val_fraction=0.0)
    assert len(ds.train[1]) == 10
    files = image_files(tmp_path / "a")
    assert [f.name for f in files] == [f"img{k}.png" for k in range(5)]


def test_image_folder_names_images_that_differ_only_in_height(tmp_path):
    from PIL import Image

    for name, height in (("a", 4), ("b", 5)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((height, 6), np.uint8)).save(tmp_path / name / "0.png")
    with pytest.raises(ValueError, match=r"images differ in size: a/0\.png is 6x4 but b/0\.png is 6x5"):
        image_folder(tmp_path)


def test_split_reader_refuses_records_of_the_wrong_shape():
    # A damaged file can decode to arrays of another shape; all of one wrong shape would stack into a silently wrong
    # split. A plain list of dicts is a record source (len and indexing).
    from dlfund.data import CorruptDatasetError, SplitReader

    records = [{"image": np.zeros((2, 2), np.uint8), "label": 1}] * 3
    reader = SplitReader(records, np.arange(3), "image", "label", input_shape=(2, 2, 1), stored_dtype=np.uint8)
    with pytest.raises(CorruptDatasetError, match=r"record 0 came back empty or malformed \(input \(2, 2\)\)"):
        reader.read_raw()
