"""TFDS dataset builders behind :func:`dlfund.data.load`, all writing ``array_record`` files without TensorFlow.

- Offline (no download): ``digits/``, ``digits_rows/``, ``breast_cancer/``, ``iris/``, ``wine/`` (scikit-learn's
  bundled copies) and ``sines/`` (generated), each on :class:`~dlfund.data.builders.base.BundledBuilder`, which
  fixes the train/test split. Each lives in its own package because TFDS looks for a builder's metadata next to
  its module and only resolves that for modules inside a package.
- Downloaded: ``downloaded.py``, TFDS's own MNIST-family and CIFAR builders with the steps that need TensorFlow
  replaced (see that module).

The builders are not imported here: TFDS is only imported once a dataset is actually loaded.
"""
