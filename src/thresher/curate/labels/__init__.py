"""The labels stages' computations: annotation key rows, consensus, agreement counts, Dawid-Skene EM, assist
proposals, label-noise detection, review queue export.

``key_rows``, ``long_format``, ``consensus``, ``agreement``, ``dawid_skene``, ``assist`` and ``noise`` are plain
numpy and Arrow over one block of key rows (partial counts of blocks add up, so they are computed where the key rows
are and merged on the driver); ``export`` reads a finished run.
"""


def is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def ordered_classes(labels) -> list[str]:
    """Classes in order: numerically when every label is a number, else as strings."""
    labels = set(labels)
    if labels and all(is_number(x) for x in labels):
        return sorted(labels, key=float)
    return sorted(labels)
