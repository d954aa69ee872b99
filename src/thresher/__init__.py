"""thresher: curate raw text corpora into fine-tuning datasets and fine-tune language models on them, on Ray.

Layout (the import direction, checked by tests/test_layout.py): ``core`` (configs, storage, console, lineage; no
Ray) <- ``runtime`` (where Ray runs) <- ``curate``, ``train``, ``evaluate``, ``jobs`` <- ``cli``; ``models`` is
shared by curate and evaluate; curate and train never import each other.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("thresher")
except PackageNotFoundError:  # a source tree on the path, not installed
    __version__ = "0+unknown"
