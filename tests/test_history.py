import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from dlfund import History


@pytest.fixture
def history():
    h = History()
    for epoch in range(1, 5):
        h.append(
            {
                "epoch": epoch,
                "loss": 1.0 / epoch,
                "accuracy": 0.5 + epoch / 10,
                "val_loss": 1.2 / epoch + (0.3 if epoch == 4 else 0.0),
                "val_accuracy": 0.45 + epoch / 10,
                "learning_rate": np.float32(0.1) / epoch,
            }
        )
    return h


def test_columns_and_arrays(history):
    assert history.columns == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    np.testing.assert_allclose(history["loss"], [1.0, 0.5, 1 / 3, 0.25])
    assert history.best_epoch("val_loss") == 3 and history.best_epoch("val_accuracy", mode="max") == 4
    assert isinstance(history.rows[0]["learning_rate"], float)  # NumPy scalars become Python numbers
    with pytest.raises(KeyError, match="columns: epoch, loss"):
        history["f1"]


def test_csv_round_trip_is_exact(history, tmp_path):
    path = tmp_path / "h.csv"
    history.append({"epoch": 5, "loss": math.nan, "accuracy": 0.1})  # a missing column and a NaN
    text = history.to_csv(path)
    assert text.splitlines()[0] == "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate"
    back = History.from_csv(path)
    assert back.rows[:4] == history.rows[:4]
    assert math.isnan(back.rows[4]["loss"]) and "val_loss" not in back.rows[4]


def test_rows_given_to_the_constructor_round_trip_as_numbers(tmp_path):
    # NumPy 2 writes a NumPy float as "np.float64(0.5)": it came back from the CSV as that text
    rows = [{"epoch": np.int64(1), "loss": np.float64(0.5), "val_loss": np.float32(0.25)}]
    History(rows).to_csv(tmp_path / "h.csv")
    back = History.from_csv(tmp_path / "h.csv")
    assert back.rows == [{"epoch": 1, "loss": 0.5, "val_loss": 0.25}]
    assert History(rows) == back
    assert type(back.rows[0]["epoch"]) is int  # 1 == 1.0 would hide an epoch read back as a float


def test_a_missing_value_is_nan_and_the_best_epoch_skips_nan_as_numpy_does():
    """A column an epoch did not record reads as NaN (not 0, which would look like a perfect loss); the best
    epoch is NumPy's nanargmin/nanargmax over the column, one NaN epoch is not an error, an all-NaN column is."""
    history = History(
        [
            {"epoch": 1, "loss": 0.9, "val_loss": math.nan, "val_accuracy": 0.5},
            {"epoch": 2, "loss": 0.5, "val_accuracy": 0.7},
            {"epoch": 3, "loss": 0.4, "val_loss": 0.3, "val_accuracy": 0.6},
            {"epoch": 4, "loss": 0.3, "val_loss": 0.35, "val_accuracy": math.nan},
        ]
    )
    np.testing.assert_array_equal(history["val_loss"], [math.nan, math.nan, 0.3, 0.35])
    values = history["val_loss"]
    assert history.best_epoch("val_loss") == history.rows[int(np.nanargmin(values))]["epoch"] == 3
    assert history.best_epoch("val_accuracy", mode="max") == 2
    with pytest.raises(ValueError, match="no finite value"):
        History([{"epoch": 1, "val_loss": math.nan}]).best_epoch("val_loss")


def test_plots(history, tmp_path):
    fig = history.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # loss, accuracy
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["train loss", "validation loss"]
    written = history.save_plots(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in written] == ["loss_curve.png", "metrics.png"]
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_repr_shows_a_table(history):
    text = repr(history)
    assert text.startswith("History(4 epochs)") and "val_accuracy" in text
    assert repr(History()) == "History(empty)"


def test_live_plot_updates_one_image_per_epoch(monkeypatch):
    import IPython.display
    from flax import nnx

    import dlfund

    shown = []

    class Handle:
        def update(self, image):
            shown.append(image)

    def display(image, display_id=False):
        shown.append(image)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3)).astype(np.float32), rng.integers(0, 2, 64)
    live = dlfund.LivePlot(every=2)
    model = dlfund.models.MLP(3, (4,), 2, rngs=nnx.Rngs(0))
    dlfund.fit(model, (x, y), epochs=4, batch_size=16, callbacks=(live,), progress=False)
    assert len(shown) == 3  # epochs 2 and 4, and once more at the end
    assert all(isinstance(image, IPython.display.Image) and image.data[:4] == b"\x89PNG" for image in shown)
    with pytest.raises(ValueError, match="every"):
        dlfund.LivePlot(every=0)


def long_history(epochs=40, best=25):
    rows = [{"epoch": e, "loss": 1.0 / e, "val_loss": abs(e - best) / 10 + 0.1} for e in range(1, epochs + 1)]
    return History(rows, selected_epoch=best, restored_best=True)


def test_a_long_history_shows_its_ends_and_its_best_epoch_on_one_screen():
    history = long_history()
    lines = repr(history).splitlines()
    assert lines[0] == "History(40 epochs, best epoch 25 (restored))"
    epochs = [line.split()[0] for line in lines[2:]]
    assert epochs == ["1", "2", "3", "...", "25", "...", "38", "39", "40"]
    assert next(line for line in lines if line.split()[0] == "25").endswith("<- best")
    assert len(lines) < 15


def test_jupyter_shows_the_history_as_a_table_with_the_best_row_marked():
    html = long_history()._repr_html_()
    assert html.count("<tr") == 1 + 9  # the header and the rows shown by repr
    assert '<tr style="font-weight:bold"><td>25</td>' in html
    assert "<th>val_loss</th>" in html and History()._repr_html_() == "<p>History(empty)</p>"


def test_plots_mark_the_best_epoch():
    history = long_history()
    figure = history.plot()
    marks = [line for ax in figure.axes for line in ax.lines if line.get_label().startswith("best epoch")]
    assert marks and all(line.get_xdata()[0] == 25 for line in marks)
    assert marks[0].get_label() == "best epoch 25 (weights restored)"
    unmarked = History(history.rows).plot()
    assert not [line for ax in unmarked.axes for line in ax.lines if line.get_label().startswith("best")]


def test_fit_result_repr_fits_on_a_screen():
    from flax import nnx

    import dlfund

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3)).astype(np.float32), rng.integers(0, 2, 200)
    stopper = dlfund.EarlyStopping(monitor="val_loss", patience=2, min_delta=10.0)  # stops after epoch 3
    model = dlfund.models.MLP(3, (4,), 2, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, (x, y), validation_data=(x[:50], y[:50]), epochs=30, early_stopping=stopper,
                        progress=False)  # fmt: skip
    text = repr(result)
    assert len(text) < 2000 and text.startswith("FitResult(MLP, 3 epochs (best 1, weights restored)")
    assert "last epoch: loss=" in text and "best epoch 1: loss=" in text and "val_loss=" in text
    assert "stopped: early stopping" in text
    assert result.history.selected_epoch == result.best_epoch == 1 and result.history.restored_best
