"""TFDS dataset builders for the datasets that ship with dlfund's dependencies (no download needed).

Each builder lives in its own package (``digits/``, ``breast_cancer/``) because TFDS looks for a builder's
metadata next to its module and only resolves that for modules inside a package. The builders are not imported
here: TFDS is only imported once a dataset is actually loaded.
"""
