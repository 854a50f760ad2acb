"""Repository-wide pytest setup (tests and notebooks): datasets are prepared into a throwaway folder.

Set at import time, so notebook kernels started by nbmake inherit it too; the user's ~/tensorflow_datasets is
never touched by the test suite.
"""

import atexit
import os
import shutil
import tempfile

if "DLFUND_DATA_DIR" not in os.environ:
    _data_dir = tempfile.mkdtemp(prefix="dlfund-test-data-")
    os.environ["DLFUND_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)

# The Colab TPU notebook needs 8 devices, which XLA only creates at start-up: tests/test_colab_notebook.py runs it in a
# kernel started with XLA_FLAGS set, without its install cell.
collect_ignore = ["notebooks/colab_tpu.ipynb"]
