"""The report's charts are :mod:`thresher.core.charts` (the eval report draws them too); this name stays until the
quality section imports them from there."""

from thresher.core.charts import bar_chart, histogram

__all__ = ["bar_chart", "histogram"]
