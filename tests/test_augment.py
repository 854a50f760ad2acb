"""On-device augmentation: determinism, NumPy references for the geometric ops, compose/hash semantics, errors."""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlfund.data import augment

# One spec per registered op, at a strength that changes every image.
ACTIVE = ("crop:2", "flip", "translate:2", "noise:0.1", "cutout:3", "brightness:0.2", "contrast:0.2")
ZERO = ("crop:0", "flip:0", "translate:0", "noise:0", "cutout:0", "brightness:0", "contrast:0")
KEY = jax.random.key(0)


@functools.cache
def compiled(aug: augment.AugmentationOp | augment.Augmentation):
    """``jax.jit(aug)``, shared by equal ops/pipelines (they hash by value): one compilation per op and shape, so the
    tests that look at the same op on the standard batch reuse it."""
    return jax.jit(aug)


def apply(spec, key, x) -> np.ndarray:
    """``spec`` (a spec string, an op or a pipeline) applied to ``x`` under jit."""
    aug = spec if isinstance(spec, augment.Augmentation) else augment.get(spec)
    return np.asarray(compiled(aug)(key, x))


def images(shape=(16, 8, 8, 3), seed=0, dtype=np.float32) -> np.ndarray:
    """Continuous, nonzero pixel values: every window of the padded image is distinct and no pixel is 0 by chance."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return x.astype(dtype)


def windows(x: np.ndarray, out: np.ndarray, padding: int) -> list[tuple[int, int]]:
    """For each example, the one offset (dy, dx) with ``out[b] == pad(x[b])[dy:dy+H, dx:dx+W]`` (NumPy reference)."""
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    found = []
    for b in range(x.shape[0]):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(out[b], padded[b, dy : dy + h, dx : dx + w])
        ]
        assert len(matches) == 1, f"example {b}: {len(matches)} matching windows"
        found.append(matches[0])
    return found


def zeroed_rectangle(x: np.ndarray, out: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns that cutout zeroed in one image [H, W, C]; asserts they form one full-channel rectangle."""
    zero = out == 0
    assert (zero == zero[..., :1]).all(), "cutout must zero all channels of a pixel"
    rows, cols = np.nonzero(zero[..., 0].any(axis=1))[0], np.nonzero(zero[..., 0].any(axis=0))[0]
    assert rows.size and cols.size, "cutout zeroed nothing"
    rect = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    expected = x.copy()
    expected[rect] = 0
    np.testing.assert_array_equal(out, expected)  # exactly that rectangle, everything else untouched
    return rect


# ---------------------------------------------------------------------------------------------------------------------
# Determinism, shapes, identities


@pytest.mark.parametrize("spec", ACTIVE)
def test_same_key_same_output_different_key_different_output(spec):
    x = images()
    out = apply(spec, KEY, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, apply(spec, KEY, x))
    assert not np.array_equal(out, apply(spec, jax.random.key(1), x))
    assert not np.array_equal(out, x)


@settings(max_examples=30, deadline=None)
@given(
    spec=st.sampled_from(ACTIVE),
    shape=st.tuples(st.integers(0, 5), st.integers(6, 40), st.integers(6, 40), st.integers(1, 4)),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]),
)
def test_shape_and_dtype_preserved(spec, shape, dtype):
    # Output shapes and dtypes are fixed when tracing: eval_shape checks them for many shapes without compiling.
    x = jax.ShapeDtypeStruct(shape, dtype)
    out = jax.eval_shape(augment.get(spec), KEY, x)
    assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("spec", ["crop:2", "flip", "translate:1", "cutout:2"])
def test_geometric_ops_keep_integer_images(spec):
    x = jax.ShapeDtypeStruct((2, 6, 6, 1), jnp.uint8)
    assert jax.eval_shape(augment.get(spec), KEY, x).dtype == jnp.uint8


@pytest.mark.parametrize("spec", ZERO)
def test_zero_strength_is_identity(spec):
    x = images()
    np.testing.assert_array_equal(apply(spec, KEY, x), x)


def test_flip():
    x = images()
    np.testing.assert_array_equal(apply("flip:1", KEY, x), x[:, :, ::-1])
    out = apply("flip", KEY, x)
    flipped = np.array([np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped ^ kept).all()  # each example whole: mirrored or untouched
    assert 0 < flipped.sum() < 16  # drawn per example, not once per batch


# ---------------------------------------------------------------------------------------------------------------------
# Geometric ops against NumPy references


def test_random_crop_is_a_window_of_the_zero_padded_image():
    x = images((256, 8, 8, 3))
    offsets = windows(x, apply("crop:2", KEY, x), 2)
    # Every example draws its own offset, and all 5 x 5 offsets occur in 256 draws.
    assert set(offsets) == {(dy, dx) for dy in range(5) for dx in range(5)}


def test_translate_shifts_with_zero_fill():
    x = images((256, 6, 7, 2))
    out = apply("translate:2", KEY, x)
    shifts = set()
    for b, (dy, dx) in enumerate(windows(x, out, 2)):
        sy, sx = 2 - dy, 2 - dx  # window offset -> shift of the content
        expected = np.zeros_like(x[b])
        expected[max(sy, 0) : 6 + min(sy, 0), max(sx, 0) : 7 + min(sx, 0)] = x[
            b, max(-sy, 0) : 6 - max(sy, 0), max(-sx, 0) : 7 - max(sx, 0)
        ]
        np.testing.assert_array_equal(out[b], expected)
        shifts.add((sy, sx))
    assert shifts == {(sy, sx) for sy in range(-2, 3) for sx in range(-2, 3)}


@settings(max_examples=8, deadline=None)
@given(
    name=st.sampled_from(["crop", "translate"]),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 8), st.integers(1, 8), st.integers(1, 3)),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_crop_and_translate_windows_any_shape(name, shape, data, seed):
    padding = data.draw(st.integers(0, min(shape[1:3]) - 1), label="padding")
    x = images(shape, seed=seed % 1000)
    windows(x, apply(f"{name}:{padding}", jax.random.key(seed), x), padding)


def test_cutout_zeroes_one_square_of_size_squared_pixels_inside_fewer_at_the_border():
    x, size = images(), 3
    out = apply(f"cutout:{size}", KEY, x)
    inside = clipped = 0
    for b in range(x.shape[0]):
        rows, cols = zeroed_rectangle(x[b], out[b])
        for span in (rows, cols):
            length = span.stop - span.start
            assert length == size or (length < size and (span.start == 0 or span.stop == 8))
        area = (rows.stop - rows.start) * (cols.stop - cols.start)
        inside += area == size * size
        clipped += area < size * size
    assert inside and clipped and inside + clipped == 16  # both cases occur with uniform centres


@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 8), w=st.integers(1, 8), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_cutout_any_shape(h, w, data, seed):
    size = data.draw(st.integers(1, min(h, w)), label="size")
    x = images((3, h, w, 2), seed=seed % 1000)
    out = apply(f"cutout:{size}", jax.random.key(seed), x)
    for b in range(3):
        rows, cols = zeroed_rectangle(x[b], out[b])
        assert rows.stop - rows.start <= size and cols.stop - cols.start <= size


# ---------------------------------------------------------------------------------------------------------------------
# Photometric ops


def test_gaussian_noise_statistics():
    x = images()
    noise = apply("noise:0.1", KEY, x) - x  # 3072 draws: the sample sd is within 1.3% of 0.1 (one sd)
    assert abs(noise.mean()) < 0.01 and noise.std() == pytest.approx(0.1, rel=0.05)
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.3  # examples draw independently


def test_brightness_adds_one_delta_per_image():
    x = images()
    delta = apply("brightness:0.2", KEY, x) - x
    per_image = delta[:, :1, :1, :1]
    np.testing.assert_allclose(delta, np.broadcast_to(per_image, delta.shape), atol=1e-6)
    assert np.abs(per_image).max() <= 0.2 + 1e-6 and np.unique(per_image.round(6)).size == 16


def test_contrast_scales_around_the_per_channel_mean():
    x = images()
    out = apply("contrast:0.2", KEY, x)
    mean = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out.mean(axis=(1, 2), keepdims=True), mean, atol=1e-5)
    factor = (out - mean) / (x - mean)
    per_image = factor[:, :1, :1, :1]
    np.testing.assert_allclose(factor, np.broadcast_to(per_image, factor.shape), rtol=1e-4)
    assert ((per_image >= 0.8 - 1e-5) & (per_image <= 1.2 + 1e-5)).all() and np.unique(per_image.round(4)).size == 16


# ---------------------------------------------------------------------------------------------------------------------
# Inside compiled code


@pytest.mark.parametrize("spec", ACTIVE)
def test_each_op_inside_scan(spec):
    op, x = augment.get(spec), jnp.asarray(images())

    def step(total, key):
        out = op(key, x)
        return total + jnp.sum(out), out

    keys = jax.random.split(KEY, 2)
    _, outs = jax.jit(lambda keys: jax.lax.scan(step, jnp.zeros(()), keys))(keys)
    for key, out in zip(keys, outs):
        np.testing.assert_allclose(out, apply(op, key, x), rtol=1e-6, atol=1e-6)
    assert not np.array_equal(outs[0], outs[1])  # a fresh draw every step


@pytest.mark.parametrize("spec", ["crop:2", "flip"])
def test_vmap_over_keys_and_legacy_keys(spec):
    # jax.vmap(train_step) over a state stacked from several seeds batches the key.
    op, x, keys = augment.get(spec), images(), jax.random.split(KEY, 2)
    outs = jax.jit(jax.vmap(op, in_axes=(0, None)))(keys, x)
    for key, out in zip(keys, outs):
        np.testing.assert_array_equal(out, apply(op, key, x))
    np.testing.assert_array_equal(apply(op, jax.random.PRNGKey(0), x), apply(op, KEY, x))  # raw uint32 keys too


def test_functions_run_eagerly_and_under_jit_with_a_static_parameter():
    x = images((2, 5, 5, 1))
    for fn, value in ((augment.contrast, 0.3), (augment.brightness, 0.3)):
        eager = np.asarray(fn(KEY, x, value))
        np.testing.assert_allclose(jax.jit(fn, static_argnums=2)(KEY, x, value), eager, rtol=1e-6)
        assert not np.array_equal(eager, x)


# ---------------------------------------------------------------------------------------------------------------------
# compose: order, keys, hashing


def test_compose_applies_ops_in_order_with_folded_keys():
    x, first, second = images(), jax.random.fold_in(KEY, 0), jax.random.fold_in(KEY, 1)
    crop_then_flip = apply(augment.compose(("crop:2", "flip")), KEY, x)
    np.testing.assert_array_equal(crop_then_flip, apply("flip", second, apply("crop:2", first, x)))
    flip_then_crop = apply(augment.compose(("flip", "crop:2")), KEY, x)
    np.testing.assert_array_equal(flip_then_crop, apply("crop:2", second, apply("flip", first, x)))
    assert not np.array_equal(crop_then_flip, flip_then_crop)


def test_compose_ops_draw_independently_and_appending_keeps_earlier_draws():
    x = images()
    twice = apply(augment.compose(("brightness:0.2", "brightness:0.2")), KEY, x) - x
    once = apply("brightness:0.2", jax.random.fold_in(KEY, 0), x) - x
    assert not np.allclose(twice, 2 * once, atol=1e-4)  # the second op does not reuse the first one's key
    cropped = apply("crop:2", jax.random.fold_in(KEY, 0), x)
    np.testing.assert_array_equal(apply(augment.compose(("crop:2", "flip:1")), KEY, x), cropped[:, :, ::-1])


def test_equal_pipelines_are_equal_hash_alike_and_share_a_compiled_step():
    a = augment.compose(("crop:4", "flip"))
    b = augment.compose([" Crop:4.0", augment.get("flip:0.5")])
    assert a == b and hash(a) == hash(b) and a.describe() == ["crop:4", "flip:0.5"]
    assert augment.compose(a.describe()) == a
    assert a != augment.compose(("flip", "crop:4")) and a != augment.compose(("crop:2", "flip"))
    assert augment.compose((augment.compose("crop:4"), "flip")) == a  # Augmentations splice in

    # As a static argument of a jitted step (how the train step holds it): equal pipelines share one program.
    step = jax.jit(lambda aug, key, x: aug(key, x), static_argnums=0)
    x = images((2, 8, 8, 1))
    step(augment.compose(("flip", "brightness:0.1")), KEY, x)
    step(augment.compose(["flip:0.5", "brightness:1e-1"]), KEY, x)
    assert step._cache_size() == 1
    step(augment.compose(("flip", "brightness:0.2")), KEY, x)
    assert step._cache_size() == 2


def test_describe_round_trips_float_values_exactly():
    aug = augment.compose(("noise:0.123456789", "contrast:1e-3", "flip:0.3"))
    assert aug.describe() == ["noise:0.123456789", "contrast:0.001", "flip:0.3"]
    assert augment.compose(aug.describe()) == aug


def test_empty_pipeline_is_the_identity_for_any_input():
    for identity in (augment.Augmentation(), augment.compose(()), augment.compose(None)):
        assert identity == augment.Augmentation() and len(identity) == 0 and identity.describe() == []
        flat = np.ones((3, 30), np.float32)
        assert identity(KEY, flat) is flat
        identity.validate((30,))


def test_user_callable():
    def shift_by_uniform(key, x):
        return x + jax.random.uniform(key, dtype=x.dtype)

    aug = augment.compose(("crop:2", shift_by_uniform))
    assert aug.describe() == ["crop:2", "shift_by_uniform"] and aug == augment.compose(("crop:2", shift_by_uniform))
    x = images()
    expected = apply("crop:2", jax.random.fold_in(KEY, 0), x) + np.asarray(
        jax.random.uniform(jax.random.fold_in(KEY, 1))
    )
    np.testing.assert_allclose(apply(aug, KEY, x), expected, rtol=1e-6)  # called with its own folded key

    def shrink(key, x):
        return x[:, :4]

    with pytest.raises(ValueError, match=r"'shrink' must return a batch of the shape and dtype it was given"):
        augment.compose(shrink).validate((8, 8, 1))


def test_validate_does_not_compile(caplog):
    aug = augment.compose(("crop:4", "flip", "noise:0.1", "cutout:8"))
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        aug.validate((32, 32, 3))
        assert augment.compose(aug, input_shape=(9, 9, 1)) == aug
        assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
        compiled(augment.get("flip:1"))(KEY, images((1, 2, 2, 1)))  # the control: running does compile
        assert [r for r in caplog.records if "Compiling" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------------------
# Errors, all before anything is compiled


@pytest.mark.parametrize(
    "spec, message",
    [
        ("crp:4", r"Unknown augmentation 'crp'"),
        ("zoom:2", "Known augmentations: brightness, contrast, crop, cutout, flip, noise, translate"),
        ("crop:-1", r"'crop': padding must be >= 0, got '-1'"),
        ("crop:2.5", r"'crop': padding must be a whole number of pixels, got '2.5'"),
        ("flip:1.5", r"'flip': p must be in \[0, 1\], got '1.5'"),
        ("flip:-0.1", r"'flip': p must be in \[0, 1\], got '-0.1'"),
        ("contrast:2", r"'contrast': max_factor must be in \[0, 1\], got '2'"),
        ("noise:nan", r"'noise': stddev must be finite"),
        ("noise:abc", r"'noise': stddev must be a number, got 'abc'"),
        ("cutout:-3", r"'cutout': size must be >= 0, got '-3'"),
        ("crop", r"augmentation 'crop' needs its padding, e.g. 'crop:4'"),
        ("translate:", r"augmentation 'translate' needs its max_shift, e.g. 'translate:2'"),
        ("brightness", r"augmentation 'brightness' needs its max_delta"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        augment.compose(("flip", spec))


def test_misspelt_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Did you mean 'crop'\?"):
        augment.get("crp:4")


def test_bad_values_in_direct_calls():
    x = images((2, 8, 8, 1))
    with pytest.raises(ValueError, match=r"'crop': padding must be >= 0, got -2"):
        augment.random_crop(KEY, x, -2)
    with pytest.raises(ValueError, match=r"'flip': p must be in \[0, 1\], got 2"):
        augment.horizontal_flip(KEY, x, 2)
    with pytest.raises(ValueError, match=r"'crop': padding must be a number, got True"):
        augment.random_crop(KEY, x, True)


def test_ops_that_do_not_fit_the_image():
    with pytest.raises(ValueError, match=r"'cutout': size 9 must be at most the image's shorter side \(8x8\)"):
        augment.compose(("flip", "cutout:9"), input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"'crop': padding 8 must be smaller than the image's shorter side \(8x8\)"):
        augment.compose("crop:8", input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"'translate': max_shift 5 must be smaller than .* \(5x9\)"):
        augment.translate(KEY, images((1, 5, 9, 1)), 5)
    with pytest.raises(ValueError, match=r"'cutout': size 6 must be at most the image's shorter side \(5x9\)"):
        augment.compose("cutout:6")(KEY, images((1, 5, 9, 1)))


def test_flat_inputs_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match=r"got examples of shape \(30,\).*do not apply to flat/tabular inputs"):
        augment.compose(("crop:4", "flip"), input_shape=(30,))
    with pytest.raises(ValueError, match=r"needs images \[B, H, W, C\]; got shape \(16, 64\).*flat/tabular"):
        augment.compose("flip")(KEY, np.ones((16, 64), np.float32))
    for spec in ACTIVE:
        with pytest.raises(ValueError, match=r"needs images \[B, H, W, C\]; got shape \(2, 8, 8\)"):
            augment.get(spec)(KEY, np.ones((2, 8, 8), np.float32))


def test_photometric_ops_need_floating_point_images():
    x = np.ones((2, 4, 4, 1), np.uint8)
    for spec in ("noise:0.1", "brightness:0.1", "contrast:0.1"):
        with pytest.raises(ValueError, match=r"needs floating-point images \(normalized\), got dtype uint8"):
            augment.get(spec)(KEY, x)


def test_specs_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"a spec like 'crop:4'.*or a callable"):
        augment.compose(("crop:4", 3))
