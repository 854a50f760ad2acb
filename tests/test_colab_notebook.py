"""notebooks/colab_tpu.ipynb runs on 8 virtual CPU devices (a Colab TPU has 8 cores), its install cell skipped."""

import json
import pathlib
import re

import nbformat
from nbclient import NotebookClient
from virtual_devices import xla_flags

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "colab_tpu.ipynb"


def test_the_colab_tpu_notebook_trains_on_8_devices(monkeypatch, tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    install = [c for c in notebook.cells if "colab-install" in c.get("metadata", {}).get("tags", [])]
    assert len(install) == 1 and "%pip install" in install[0].source
    notebook.cells = [c for c in notebook.cells if c not in install]
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "commit it with outputs cleared"
    monkeypatch.setenv("XLA_FLAGS", xla_flags(8))  # the kernel inherits it
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "backend: cpu; devices: 8 (8 x cpu)" in text
    assert "devices: 8 parallelism: data" in text
    assert "on 8 devices, replicated: True" in text
    gaps = re.findall(r"largest difference between 1 and 8 devices in (\w+): (\S+)", text)
    assert [column for column, _ in gaps] == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert "does not split evenly over 8 devices" in text
    assert "one core holds (128, 1024)" in text
    assert "members on 8 devices" in text
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the loss curves drawn inline
    json.dumps(notebook)  # executed notebook is valid JSON
