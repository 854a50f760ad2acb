"""The two ways a registered dataset can be unusable on this machine, as exceptions whose message says the fix."""

from __future__ import annotations


class DatasetNotPreparedError(FileNotFoundError):
    """A dataset's files are not under ``data_dir`` and cannot be downloaded now.

    The message names what is missing, where dlfund looked and how to prepare the files on a machine with
    network access (then copy the folder over). Raised before any long network wait.
    """


class CorruptDatasetError(RuntimeError):
    """A prepared file of a dataset could not be read (truncated, damaged or missing shard).

    The message names the dataset's folder and how to prepare it again; dlfund deletes nothing when it raises.
    """
