#!/usr/bin/env bash
# Fetches, on this machine, the wheels that benchmarks/device_suite.py needs on the lent NVIDIA machine and that
# its image lacks: Keras 3 (the keras-jax peer) and the two of Keras' requirements not there (namex, optree), for
# its Python 3.12 on x86-64, into .whl/ (git-ignored; a device run carries it). Everything else the suite imports
# (JAX with CUDA, Flax, Optax, PyTorch, NumPy, PyYAML, tqdm, rich, h5py, ml-dtypes) is in that image.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "keras>=3.0" namex optree
ls -l .whl
