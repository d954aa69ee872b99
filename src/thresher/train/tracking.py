"""Experiment tracking to MLflow (``tracking.mlflow``): rank 0 logs each training attempt as one MLflow run.

Params are the config (dotted keys), tags the method, output and data lineage, metrics the numbers of
metrics.json: ``train_loss`` per logged step, ``eval_loss``, ``eval_perplexity``, ... per evaluation, and at the end
the run's scalars (tokens/s, train seconds, best evaluation, ...). A resumed attempt starts a new MLflow run that
first logs the history its checkpoint carries, so the last run holds the whole history, as metrics.json does.

The default store is the local file store ``<output.path>/mlruns`` (MLflow 3 keeps it in maintenance mode and
asks for an explicit opt-in, ``MLFLOW_ALLOW_FILE_STORE``, which :func:`client` gives); ``tracking_uri`` may be
any MLflow tracking URI (``http://``, ``sqlite:///...``, ``databricks``). A tracking failure never fails the
training: it is logged as a warning once and tracking stops for that run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from thresher.core.secrets import redact_text, redact_url
from thresher.train.config import TrainConfig

log = logging.getLogger(__name__)

FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
MAX_BATCH = 100  # params per log_batch call (MLflow's limit); metrics are sent in batches of the same size
PARENT_TAG = "mlflow.parentRunId"  # what makes a run a child of another in MLflow's UI and search


@dataclass(frozen=True)
class MlflowSettings:
    """Where and what rank 0 logs: resolved on the driver (relative paths against its working directory)."""

    tracking_uri: str
    experiment: str
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]


def flatten(mapping: dict, prefix: str = "", lists: bool = False) -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; with ``lists``, ``{"a": [{"b": 1}]}`` -> ``{"a.0.b": 1}``."""
    flat = {}
    for key, item in mapping.items():
        name = f"{prefix}{key}"
        if lists and isinstance(item, list) and item and all(isinstance(x, dict) for x in item):
            item = {str(i): x for i, x in enumerate(item)}
        if isinstance(item, dict) and item:
            flat.update(flatten(item, f"{name}.", lists))
        else:
            flat[name] = item
    return flat


def store_uri(uri: str) -> str:
    """A local path as an absolute ``file://`` URI; any other URI as it is."""
    return uri if "://" in uri or uri.startswith(("sqlite:", "databricks")) else Path(uri).absolute().as_uri()


def settings(cfg: TrainConfig, lineage: dict) -> MlflowSettings | None:
    """The MLflow settings of ``cfg`` (None when ``tracking.mlflow`` is not set)."""
    opts = cfg.tracking.mlflow
    if opts is None:
        return None
    tags = {
        "thresher.method": cfg.method,
        "thresher.output": cfg.output.given,
        "thresher.model": cfg.model.name_or_path,
    }
    for key, item in flatten({"thresher.lineage": lineage}, lists=True).items():  # a mixture: one per dataset
        tags[key] = item if isinstance(item, str) else json.dumps(item)
    if opts.parent_run_id:
        tags[PARENT_TAG] = opts.parent_run_id
    return MlflowSettings(
        tracking_uri=store_uri(opts.tracking_uri or os.path.join(cfg.output.path, "mlruns")),
        experiment=opts.experiment,
        run_name=opts.run_name or Path(cfg.output.path.rstrip("/")).name,
        params={k: redact_text(str(v)) for k, v in flatten(cfg.model_dump()).items()},
        tags={k: redact_text(v) for k, v in tags.items()},
    )


def client(tracking_uri: str):
    """An ``MlflowClient`` for ``tracking_uri`` (opting into the file store for ``file://`` URIs)."""
    from mlflow import MlflowClient

    if tracking_uri.startswith("file:"):
        os.environ.setdefault(FILE_STORE_ENV, "true")
    return MlflowClient(tracking_uri=tracking_uri)


class Tracker:
    """Logs one training attempt to MLflow; does nothing without settings (other ranks, tracking off) or after
    its first failure."""

    def __init__(self, settings: MlflowSettings | None):
        self.settings = settings
        self.client = None
        self.run_id = None

    def _call(self, fn) -> None:
        if self.settings is None:
            return
        try:
            fn()
        except Exception as e:  # tracking must not fail the training
            log.warning(
                "MLflow tracking at %s failed (%s: %s); training goes on without it",
                redact_url(self.settings.tracking_uri),
                type(e).__name__,
                redact_text(str(e)),
            )
            self.settings = None

    def _log(self, metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entities = [Metric(name, float(v), now, step) for name, v, step in metrics if v is not None]
        for i in range(0, len(entities), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=entities[i : i + MAX_BATCH])

    def start(self, train_loss: list[dict], evals: list[dict], resumed_from: int | None) -> None:
        """Create the run, log params and tags, and the history a resumed attempt starts with."""

        def start():
            from mlflow.entities import Param

            s = self.settings
            self.client = client(s.tracking_uri)
            experiment = self.client.get_experiment_by_name(s.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(s.experiment)
            tags = {**s.tags, "thresher.resumed_from_step": str(resumed_from)}
            self.run_id = self.client.create_run(experiment_id, run_name=s.run_name, tags=tags).info.run_id
            params = [Param(k, v) for k, v in s.params.items()]
            for i in range(0, len(params), MAX_BATCH):
                self.client.log_batch(self.run_id, params=params[i : i + MAX_BATCH])
            self._log([("train_loss", x["loss"], x["step"]) for x in train_loss] + eval_metrics(evals))

        self._call(start)

    def log_train_loss(self, step: int, loss: float) -> None:
        self._call(lambda: self._log([("train_loss", loss, step)]))

    def log_eval(self, evaluation: dict) -> None:
        self._call(lambda: self._log(eval_metrics([evaluation])))

    def finish(self, result: dict) -> None:
        """Log the run's scalars (nested ones with dotted names; not the final evaluation's, logged with it) and end
        the run."""

        def finish():
            scalars = {
                k: v for k, v in flatten(result).items() if isinstance(v, (int, float)) and not k.startswith("eval_")
            }
            self._log([(name, v, result["steps"]) for name, v in scalars.items()])
            self.client.set_terminated(self.run_id)

        self._call(finish)


def eval_metrics(evals: list[dict]) -> list[tuple[str, float, int]]:
    """``eval_<name>`` of every number of each evaluation record (loss, perplexity, the objective's others)."""
    return [(f"eval_{name}", v, e["step"]) for e in evals for name, v in e.items() if name != "step"]
