"""Repository-wide pytest setup (tests and notebooks): datasets are prepared into a throwaway folder, and compiled
programs are cached in another.

Set at import time, so the xdist workers, subprocesses and notebook kernels started by nbmake inherit it too; the
user's ~/tensorflow_datasets is never touched by the test suite.
"""

import atexit
import os
import shutil
import tempfile

if "DLFUND_DATA_DIR" not in os.environ:
    _data_dir = tempfile.mkdtemp(prefix="dlfund-test-data-")
    os.environ["DLFUND_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)

# Compilation dominates a CPU test run, and many tests compile the same programs (the digits MLP's epoch, evaluate,
# ...): one persistent XLA cache, empty at the start of the session and shared by the workers, the subprocess
# tests and the notebook kernels, compiles each once. A cache hit still reports a compile event with the program's
# name, so the recompile watch counts it. Measured: tests/test_fit.py + test_run.py 200 s -> 172 s from cold.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="dlfund-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the many small programs add up too
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)

# And compile without XLA's backend optimizations: compilation, not execution, is what a test run waits for on CPU
# (tests/test_fit.py + test_run.py with the cache: 172 s optimized, 97 s at level 0). At level 0 most of what is left of
# a compile is XLA:CPU's MLIR fusion emitters; its older elemental emitters (--xla_cpu_use_fusion_emitters=false)
# compile the same fusions in about half the time: the whole suite on 2 workers 1087 s -> 711 s and 767 s -> 557 s in
# two hours of 2026-12-03 (`DLFUND_TEST_XLA_FLAGS=--xla_backend_optimization_level=0 make test` gives the level-0-only
# figure). Without level 0 that flag saves nothing. Every comparison in the suite is made within one setting (a run
# against its reference, both compiled alike), so the settings change no verdict; users' programs are compiled at XLA's
# defaults. DLFUND_TEST_XLA_FLAGS, given or the default, joins XLA_FLAGS once (the xdist workers import this file
# again); subprocess tests that set XLA_FLAGS themselves (8 virtual devices, one device per process) start from it too
# (tests/virtual_devices.py: xla_flags).
os.environ.setdefault("DLFUND_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")
if os.environ["DLFUND_TEST_XLA_FLAGS"] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), os.environ["DLFUND_TEST_XLA_FLAGS"]]))

# The Colab TPU notebook needs 8 devices, which XLA only creates at start-up: tests/test_colab_notebook.py runs it in a
# kernel started with XLA_FLAGS set, without its install cell.
collect_ignore = ["notebooks/colab_tpu.ipynb"]
