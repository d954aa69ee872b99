"""Evaluation: ``thresher eval`` (generate and score a model on a split) and ``thresher compare``."""
