"""Inference on raw data from a run folder (load_run, dlfund predict), predict_classes, and the batch-axis error."""

import csv
import json

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

import dlfund
from dlfund import cli
from dlfund.models import CNN, MLP


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short digits run from the Python API, its dataset and its result."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    ds = dlfund.data.load("digits")
    model = MLP(64, (64,), 10, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, ds, epochs=12, batch_size=32, learning_rate=3e-3, progress=False, run_dir=run_dir)
    return run_dir, ds, result


def raw_digits():
    """scikit-learn's digits as stored (ink counts 0..16), all 1797 of them: train, val and test examples."""
    digits = load_digits()
    return digits.images[..., None], digits.target


def test_a_run_predicts_raw_digits_as_well_as_it_tests(digits_run):
    run_dir, ds, result = digits_run
    run = dlfund.load_run(run_dir)
    test_accuracy = dlfund.evaluate(result.model, ds.test)["accuracy"]
    x_raw, y = raw_digits()
    accuracy = float(np.mean(run.predict_classes(x_raw) == y))
    # Mostly training examples, so at least the test accuracy; the model without the normalization falls short.
    assert accuracy >= test_accuracy - 0.005
    unnormalized = float(np.mean(dlfund.predict_classes(dlfund.load_model(run_dir), x_raw) == y))
    assert unnormalized < accuracy - 0.02


def test_a_run_records_what_inference_needs(digits_run):
    run_dir, ds, _ = digits_run
    data = json.loads((run_dir / "config.json").read_text())["data"]
    assert data["input_shape"] == [8, 8, 1] and data["class_names"] == list(ds.class_names)
    run = dlfund.load_run(run_dir)
    np.testing.assert_array_equal(run.normalization.mean, ds.normalization.mean)
    np.testing.assert_array_equal(run.normalization.std, ds.normalization.std)
    assert run.normalization.scale == ds.normalization.scale and run.finished
    # The normalized test split, mapped back to stored values, gives the run's own test metrics.
    raw_test = ds.normalization.invert(ds.test[0])
    np.testing.assert_allclose(run.inputs(raw_test), ds.test[0], atol=1e-5)
    assert run.evaluate(raw_test, ds.test[1])["accuracy"] == pytest.approx(
        dlfund.evaluate(run.model, ds.test)["accuracy"]
    )


def test_run_predict_gives_probabilities_that_pick_the_classes(digits_run):
    run = dlfund.load_run(digits_run[0])
    x_raw, _ = raw_digits()
    probabilities = run.predict(x_raw[:50])
    assert probabilities.shape == (50, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), run.predict_classes(x_raw[:50]))


def test_run_repr_is_short_and_says_what_it_holds(digits_run):
    run = dlfund.load_run(digits_run[0])
    text = repr(run)
    assert len(text) < 2000 and "MLP on digits" in text and "10 classes" in text and "finished" in text


def test_a_single_example_is_told_to_add_a_batch_axis(digits_run):
    run_dir, ds, result = digits_run
    run = dlfund.load_run(run_dir)
    with pytest.raises(ValueError, match=r"add a batch axis, x\[None\]"):
        run.predict(raw_digits()[0][0])
    with pytest.raises(ValueError, match=r"add a batch axis, x\[None\]"):
        dlfund.predict(result.model, ds.test[0][0])
    with pytest.raises(ValueError, match=r"add a batch axis"):
        dlfund.predict_classes(result.model, ds.test[0][0].reshape(64))
    # Examples that do not fit are still a model error, with the model's own advice.
    with pytest.raises(ValueError, match="in_features=32"):
        dlfund.predict(result.model, np.zeros((3, 32), np.float32))
    with pytest.raises(ValueError, match=r"takes examples of shape \(8, 8, 1\)"):
        run.predict(np.zeros((3, 8, 8), np.float32))


def test_predict_classes_follows_the_loss(digits_run):
    _, ds, result = digits_run
    logits = dlfund.predict(result.model, ds.test[0])
    np.testing.assert_array_equal(dlfund.predict_classes(result.model, ds.test[0]), logits.argmax(axis=1))
    binary = MLP(4, (8,), 1, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    scores = dlfund.predict(binary, x)[:, 0]
    classes = dlfund.predict_classes(binary, x, loss="binary_cross_entropy")
    np.testing.assert_array_equal(classes, (scores > 0).astype(np.int32))
    with pytest.raises(ValueError, match="regression loss"):
        dlfund.predict_classes(binary, x, loss="mse")


def test_a_run_on_arrays_uses_inputs_as_given(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    result = dlfund.fit(MLP(5, (8,), 2, rngs=nnx.Rngs(0)), (x, y), epochs=2, progress=False, run_dir=tmp_path / "r")
    run = dlfund.load_run(tmp_path / "r")
    assert run.normalization is None and run.class_names == ("0", "1")
    np.testing.assert_array_equal(run.inputs(x), x)
    # The model loaded from the folder, fed the arrays as they are, predicts as the trained model in memory.
    np.testing.assert_allclose(run.predict(x)[:, 1], jax.nn.softmax(dlfund.predict(result.model, x))[:, 1], rtol=1e-5)
    # Image files cannot be mapped to inputs whose units the run does not know.
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(ValueError, match="was not trained on 8-bit images"):
        cli.predict(cli.PredictArgs(str(tmp_path / "r"), str(tmp_path / "images")))


def test_image_files_are_refused_for_a_run_whose_raw_inputs_are_not_8_bit_pixels(digits_run, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a.png")
    assert cli.main(["predict", str(digits_run[0]), str(tmp_path / "images")]) == 2
    assert "values scaled by 0.0625, not 1/255" in capsys.readouterr().err


def test_a_perceptron_run_predicts_classes_without_probabilities(tmp_path, capsys):
    run_dir = tmp_path / "p"
    argv = ["train", "--model", "perceptron", "--dataset", "breast_cancer", "--epochs", "2", "--patience", "0"]
    assert cli.main([*argv, "--run-dir", str(run_dir), "--no-progress"]) == 0
    run = dlfund.load_run(run_dir)
    x = run.normalization.invert(dlfund.data.load("breast_cancer").test[0][:4])
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert cli.main(["predict", str(run_dir), str(tmp_path / "x.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [run.class_names[c] for c in run.predict_classes(x)]
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == names and "p=" not in lines[0]
    with pytest.raises(ValueError, match="does not output probabilities"):
        run.predict(x)


def test_one_output_under_softmax_is_refused():
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = MLP(4, (8,), 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="softmax over one output is always 1"):
        dlfund.fit(model, (x, y), epochs=1, progress=False)
    with pytest.raises(ValueError, match="loss='binary_cross_entropy'"):
        dlfund.predict_classes(model, x)
    with pytest.raises(ValueError, match="one output per class"):
        dlfund.evaluate(model, (x, y))


def test_load_run_refuses_a_folder_without_the_data_record(digits_run, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(digits_run[0], copy)
    config = json.loads((copy / "config.json").read_text())
    del config["data"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="did not record the input normalization"):
        dlfund.load_run(copy)
    with pytest.raises(FileNotFoundError, match="not a dlfund run folder"):
        dlfund.load_run(tmp_path)


def test_cli_predict_reads_npy_and_writes_csv(digits_run, tmp_path, capsys):
    run_dir = digits_run[0]
    x_raw, _ = raw_digits()
    np.save(tmp_path / "x.npy", x_raw[:30])
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(run_dir), str(tmp_path / "x.npy"), "--out", str(out), "--show", "5"]) == 0
    printed = capsys.readouterr().out
    assert "... 25 more" in printed and "30 predictions written" in printed
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    run = dlfund.load_run(run_dir)
    assert [int(r["class"]) for r in rows] == run.predict_classes(x_raw[:30]).tolist()
    assert rows[0]["class_name"] == run.class_names[int(rows[0]["class"])] and "p_9" in rows[0]
    np.save(tmp_path / "one.npy", x_raw[0])  # one example without the batch axis
    assert cli.main(["predict", str(run_dir), str(tmp_path / "one.npy")]) == 0
    assert capsys.readouterr().out.startswith("0: ")
    assert cli.main(["predict", str(run_dir), str(tmp_path / "missing.npy")]) == 2


def test_cli_predict_reads_an_image_folder(tmp_path, capsys):
    """A run on image files predicts a folder of new image files; the pixels get the run's normalization."""
    rng = np.random.default_rng(0)
    images = {"dark": rng.integers(0, 60, size=(12, 6, 6)), "light": rng.integers(190, 256, size=(12, 6, 6))}
    for name, pixels in images.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for i, p in enumerate(pixels):
            Image.fromarray(p.astype(np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    ds = dlfund.data.image_folder(tmp_path / "data", test_fraction=0.25)
    model = CNN((6, 6, 1), channels=(4,), dense=(8,), num_classes=2, rngs=nnx.Rngs(0))
    dlfund.fit(model, ds, epochs=15, batch_size=8, learning_rate=1e-2, progress=False, run_dir=tmp_path / "run")
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(np.full((12, 12), 20, np.uint8)).save(new / "a_dark.png")  # another size: resized
    Image.fromarray(np.full((6, 6, 3), 240, np.uint8)).save(new / "b_light.png")  # RGB: made grey
    assert cli.main(["predict", str(tmp_path / "run"), str(new)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a_dark.png: dark") and lines[1].startswith("b_light.png: light")


def test_calls_on_different_counts_share_programs_and_the_padding_counts_nowhere():
    """predict/embed/evaluate on 5, 6 and 7 examples pad to 8 rows (the last example repeated): one program for
    all; each output is its example's own, and the metrics are sklearn's on the real examples only."""
    import optax
    from sklearn.metrics import accuracy_score

    from dlfund.train import evaluation

    rng = np.random.default_rng(0)
    model = MLP(4, (8,), 3, rngs=nnx.Rngs(0))
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    logits = dlfund.predict(model, x)
    features = dlfund.transfer.embed(model, x)
    dlfund.evaluate(model, (x, y), metrics=("loss", "accuracy"))
    sizes = (evaluation.predict_arrays._cache_size(), evaluation.evaluate_arrays._cache_size())
    for n in (5, 6, 7):
        np.testing.assert_allclose(dlfund.predict(model, x[:n]), logits[:n], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dlfund.transfer.embed(model, x[:n]), features[:n], rtol=1e-6, atol=1e-6)
        scores = dlfund.evaluate(model, (x[:n], y[:n]), metrics=("loss", "accuracy"))
        expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits[:n], y[:n]).mean()
        assert scores["loss"] == pytest.approx(float(expected_loss), rel=1e-5)
        assert scores["accuracy"] == pytest.approx(accuracy_score(y[:n], logits[:n].argmax(1)))
        assert scores["num_examples"] == n
    assert (evaluation.predict_arrays._cache_size(), evaluation.evaluate_arrays._cache_size()) == sizes
    # Above the batch size a count pads to whole batches: 9 and 10 examples in batches of 4 make 3 batches.
    np.testing.assert_allclose(dlfund.predict(model, np.concatenate([x, x[:2]]), batch_size=4)[8:], logits[:2], 1e-6)
    assert evaluation.padded_rows(evaluation.eval_state(model), 4, 9) == (4, 12)
    assert evaluation.padded_rows(evaluation.eval_state(model), 1024, 600) == (1024, 1024)
    assert evaluation.padded_rows(evaluation.eval_state(model), 1024, 3) == (4, 4)


def test_cli_predict_refuses_bad_inputs_with_a_message_that_names_the_problem(digits_run, tmp_path, capsys):
    run_dir = digits_run[0]
    x = raw_digits()[0][:3].astype(np.float32)
    nan = x.copy()
    nan[2, 4, 4, 0] = np.nan
    cases = {
        "letters.npy": (np.full((3, 8, 8, 1), "a"), "holds <U1 values; the model's inputs are real numbers"),
        "complex.npy": (x.astype(np.complex64), "holds complex64 values"),
        "nan.npy": (nan, "NaN or infinite values in 1 of 3 examples (the first is example 2)"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        assert cli.main(["predict", str(run_dir), str(tmp_path / name)]) == 2, name
        assert message in capsys.readouterr().err, name
    (tmp_path / "text.npy").write_text("0 1 2\n")
    assert cli.main(["predict", str(run_dir), str(tmp_path / "text.npy")]) == 2
    assert "text.npy is not a NumPy array file (write one with numpy.save)" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", x)
    for flags, message in [(["--out", str(tmp_path)], "is a folder; give a file name"), (["--show", "-1"], "--show")]:
        assert cli.main(["predict", str(run_dir), str(tmp_path / "x.npy"), *flags]) == 2
        assert message in capsys.readouterr().err
    # the Python API refuses the same values (load_run(...).predict would give NaN probabilities)
    with pytest.raises(ValueError, match="NaN or infinite"):
        dlfund.load_run(run_dir).predict(np.where(np.isnan(nan), np.inf, nan))
    with pytest.raises(TypeError, match="real numbers"):
        dlfund.load_run(run_dir).predict(x.astype(np.complex64))


def test_cli_names_a_damaged_weights_file_and_the_run_that_it_cannot_evaluate(digits_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_run[0], copy)
    np.save(tmp_path / "x.npy", raw_digits()[0][:2])
    # evaluate needs the dataset, which only `dlfund train` records: a run of dlfund.fit gets told what works
    assert cli.main(["evaluate", str(copy)]) == 2
    assert "written by dlfund.fit from Python" in capsys.readouterr().err
    result = (copy / "result.json").read_text()
    (copy / "result.json").write_text(result[:20])  # edited by hand, or cut short
    assert cli.main(["predict", str(copy), str(tmp_path / "x.npy")]) == 2
    assert f"{copy / 'result.json'} is damaged or not JSON" in capsys.readouterr().err
    (copy / "result.json").write_text(result)
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])  # cut short, as by a full disk
    assert cli.main(["predict", str(copy), str(tmp_path / "x.npy")]) == 2
    assert f"cannot read the weights file {weights}: it is damaged" in capsys.readouterr().err
