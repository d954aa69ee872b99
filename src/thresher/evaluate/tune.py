"""``thresher tune``: a hyperparameter search on Ray Tune over keys of one base training config
(:mod:`thresher.evaluate.tune_config`).

Each trial is a ``thresher train`` run (Ray Train inside a Ray Tune trial) into ``<output>/trials/TRIAL_ID``:
``model/``, ``metrics.json``, ``checkpoints/``, lineage. Its evaluations on ``data.validation`` go on to Ray Tune as
they are made (``step``, ``eval_loss``, ...): the ASHA scheduler compares the trials there and stops the unpromising
ones (their runs aborted as Ctrl-C aborts ``thresher train``); a random or TPE search picks each trial's values. A
failed trial is recorded and the search goes on. Before any trial, the base config's data and model are checked as
``thresher train`` checks them (:func:`thresher.evaluate.compare.check_inputs`). Ray Tune's state is in
``<output>/search``: re-running the same command resumes the search (a trial that was running or had failed runs
again, from its checkpoints; a finished one is not run again). ``<output>/tune-config.json`` holds the
config the search started with, and a re-run with another one is refused. A search that ends without a completed
trial fails with the first failed trial's error and says how to retry or start over.

With ``tracking.mlflow`` in the base config, the search is one MLflow run (``<output>/mlflow-run.json`` keeps its id
for a resumed search) and each trial's run is its child, in the base's store (default ``<output>/mlruns``); the
search's run gets the space, the best trial and its value at the end.

At the end: ``tune.json`` and ``tune.html`` (every trial: its values, metric curve, best and final value, time,
tokens/s, state), ``best_config.yaml`` (the base with the best trial's values: a ready training config whose
``output.path`` is ``<output>/best``) and ``best/`` (the best trial's ``model/`` and ``metrics.json``, as ``thresher
train`` writes them). The best trial is the completed trial whose saved model has the best metric (its last
evaluation, or with ``eval.save_best`` its best one); a trial stopped early saves no model. They name paths as the
config gives them (a relative ``output.path`` stays relative).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from thresher.core.config import ConfigError, validate
from thresher.core.console import current as console
from thresher.core.secrets import redact_data
from thresher.core.storage import join
from thresher.evaluate.compare import check_inputs
from thresher.evaluate.tune_config import (
    CURATE,
    TuneConfig,
    base_curation,
    base_train,
    check,
    combination,
    combinations,
    curation_change,
    with_params,
)
from thresher.runtime import ending_at_once, ray_session
from thresher.train.config import TrainConfig

TUNE_JSON, TUNE_HTML, BEST_CONFIG, RECORD = "tune.json", "tune.html", "best_config.yaml", "tune-config.json"
MLFLOW_RUN = "mlflow-run.json"
TRIALS, SEARCH, BEST = "trials", "search", "best"
MAX_T = 2**30  # ASHA's last rung: trials are never stopped for reaching it (they end with their own steps)


def training_params(params: dict[str, Any], curated: dict[str, str] | None) -> dict[str, Any]:
    """A trial's training-config values: its curation choices (``curate.*``) replaced by the train split they
    curated (``curated``: combination -> that split's folder)."""
    values = {k: v for k, v in params.items() if not k.startswith(CURATE)}
    if curated:
        values["data.train"] = curated[combination(params)]
    return values


def trial_config(base: dict, params: dict[str, Any], folder: str, curated: dict[str, str] | None = None) -> TrainConfig:
    """The training config of a trial: the base with its values (its curation choices as their curated data),
    training into ``folder`` (and, where the base names a checkpoint folder, checkpointing into a folder of its own
    there)."""
    train = with_params(base, training_params(params, curated))
    train["output"] = {**(train.get("output") or {}), "path": folder}
    checkpoints = (train.get("checkpoint") or {}).get("storage_path")
    if checkpoints:
        train["checkpoint"] = {**train["checkpoint"], "storage_path": join(checkpoints, Path(folder).name)}
    return validate(TrainConfig, train, prefix="train")


def _evaluations_to(queue, metric: str):
    """A Ray Train callback putting rank 0's evaluations (not its checkpoint reports) on ``queue``."""
    from ray.train import UserCallback

    class EvaluationsTo(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metric in metrics[0]:
                queue.put(metrics[0])

    return EvaluationsTo()


class TrialDriver:
    """The driver of a trial's training run: an actor outside the trial's placement group, which Ray Tune makes
    every task and actor started by the trial join (Ray Data would see only that group's resources: none). The run
    is in its main thread, in the folder ``thresher tune`` runs in (the config's relative paths lead from there, and
    the run's outputs name them as given), SIGINT unblocked (Ray's workers block it): a SIGINT aborts it as Ctrl-C
    does, workers and their placement group removed (killing the actor would leave that group held on a Ray without
    a dashboard)."""

    def pid(self) -> int:
        return os.getpid()

    def run(self, cwd: str, base: dict, params: dict[str, Any], folder: str, callbacks: list, curated) -> None:
        from thresher.train.run import run as train

        os.chdir(cwd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        train(trial_config(base, params, folder, curated), callbacks=callbacks)


def _trial_class():
    from ray import tune

    class Trial(tune.Trainable):
        """One Tune trial: a training run with the trial's values into ``<output>/trials/TRIAL_ID``. Each result is
        an evaluation after which the run goes on, as the run makes it; the last one, once the run has ended, is
        the run's result (``metrics.json``). When the scheduler stops the trial, its run is aborted (``cleanup``). A
        trial whose run had finished before (the search was stopped before Tune recorded it) gives its recorded
        evaluations and is not run again."""

        def setup(self, config: dict, base: dict, output: str, cwd: str, metric: str, curated: dict | None):
            import ray
            from ray.util.queue import Queue
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            folder = join(output, TRIALS, self.trial_id)  # from ``cwd``, where the search runs
            self.metrics, self.done, self.replay = Path(cwd, folder, "metrics.json"), None, []
            if self.metrics.exists():
                self.replay = json.loads(self.metrics.read_text())["evals"]
                return
            self.queue = Queue(actor_options={"num_cpus": 0})
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            self.driver = ray.remote(num_cpus=0, scheduling_strategy=here)(TrialDriver).remote()
            self.driver_pid = ray.get(self.driver.pid.remote())
            self.done = self.driver.run.remote(
                cwd, base, config, folder, [_evaluations_to(self.queue, metric)], curated
            )

        def step(self) -> dict:
            import ray
            from ray.util.queue import Empty

            from thresher.train.loop import evaluation_metrics

            if self.done is None:
                evaluation = self.replay.pop(0)
                return {**evaluation_metrics(evaluation), "done": not self.replay}
            while True:
                ended = bool(ray.wait([self.done], timeout=0)[0])
                try:
                    return self.queue.get(timeout=1.0)
                except Empty:
                    if ended:
                        break
            ray.get(self.done)  # a failed run fails the trial
            self.done = None
            return {**evaluation_metrics(json.loads(self.metrics.read_text())["evals"][-1]), "done": True}

        def cleanup(self):
            import ray

            if self.done is not None and not ray.wait([self.done], timeout=0)[0]:
                os.kill(self.driver_pid, signal.SIGINT)
                ray.wait([self.done], timeout=120)

    return Trial


def trials_that_fit(train: TrainConfig, cluster: dict) -> int:
    """How many trials of ``train``'s scaling the cluster runs at once. Without ``scaling.resources_per_worker`` a
    CPU run takes every CPU but one (:func:`thresher.train.run.worker_resources`), a GPU run one GPU per worker."""
    scaling = train.scaling
    if scaling.resources_per_worker is None:
        if not scaling.use_gpu:
            return 1
        per_worker = {"GPU": 1.0}
    else:
        per_worker = scaling.resources_per_worker
    free = {**cluster, "CPU": cluster.get("CPU", 0.0) - (0 if scaling.use_gpu else 1)}  # one CPU for Ray Data
    fits = [math.floor(free.get(k, 0.0) / (v * scaling.num_workers)) for k, v in per_worker.items() if v > 0]
    return max(min(fits, default=1), 1)


def check_trials_fit(cfg: TuneConfig, base: dict, train: TrainConfig, cluster: dict[str, float]) -> None:
    """Refuse (exit 2, naming the key) a search whose trials' training workers and data pipeline the cluster cannot
    run: the base's scaling, and each value the space gives a ``scaling`` key."""
    from thresher.train.run import fitting_workers

    configs = [("train.", train)]
    placeholder = {"output": {"path": cfg.output.path}}
    for key, dimension in cfg.space.items():
        if key.startswith("scaling."):
            configs += [
                (
                    f"space.{key}: value {value!r}: train.",
                    validate(TrainConfig, with_params({**base, **placeholder}, {key: value})),
                )
                for value in dimension.values()
            ]
    for where, config in configs:
        try:
            fitting_workers(config, cluster)
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None


def _space(cfg: TuneConfig) -> dict:
    from ray import tune

    sample = {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}
    return {
        key: tune.choice(d.choice) if d.kind == "choice" else sample[d.kind](*getattr(d, d.kind))
        for key, d in cfg.space.items()
    }


def _tuner(cfg: TuneConfig, base: dict, output: str, concurrent: int, curated: dict[str, str] | None):
    """A new Tuner of the search, or the one restored from ``<output>/search`` (its failed trials to run again)."""
    import ray
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(
            _trial_class(), base=base, output=cfg.output.path, cwd=os.getcwd(), metric=cfg.metric, curated=curated
        ),
        {"CPU": 0, f"node:{ray.util.get_node_ip_address()}": 0.001},
    )  # the driver's node: trials write its disk
    path = join(output, SEARCH)
    if tune.Tuner.can_restore(path):
        console().print(
            f"resuming the search in {join(cfg.output.path, SEARCH)} (unfinished and failed trials run again)"
        )
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True), True
    if cfg.search == "tpe":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(sampler=TPESampler(seed=cfg.seed))
    else:
        from ray.tune.search import BasicVariantGenerator

        search = BasicVariantGenerator(random_state=cfg.seed, max_concurrent=concurrent)
    scheduler = None
    if cfg.scheduler:
        from ray.tune.schedulers import ASHAScheduler

        asha = cfg.scheduler.asha
        scheduler = ASHAScheduler(
            time_attr="step",
            max_t=MAX_T,
            grace_period=asha.grace_period,
            reduction_factor=asha.reduction_factor,
            stop_last_trials=False,
        )
    tuner = tune.Tuner(
        trainable,
        param_space=_space(cfg),
        tune_config=tune.TuneConfig(
            metric=cfg.metric,
            mode=cfg.mode,
            search_alg=search,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            reuse_actors=False,  # a stopped trial's actor ends
            max_concurrent_trials=concurrent if cfg.search == "tpe" else None,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=SEARCH,
            storage_path=output,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
            # a trial's state is its run's own checkpoints
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        ),
    )
    return tuner, False


def _check_record(cfg: TuneConfig, base: dict, output: str) -> None:
    """Record the search's config (redacted), or refuse one that differs from the config the search in ``output``
    began with."""
    record, current = Path(output, RECORD), redact_data(json.loads(json.dumps({**cfg.model_dump(), "train": base})))
    if record.exists():
        if json.loads(record.read_text()) != current:
            raise ConfigError(
                f"output.path: {cfg.output.path} holds a search started with another config; use "
                "another output.path or delete that folder"
            )
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(current, indent=2))


def _search_run(cfg: TuneConfig, base: dict, output: str) -> tuple[dict, dict | None]:
    """With ``tracking.mlflow`` in ``base``: the search's MLflow run (made once; its id kept in ``<output>/MLFLOW_RUN``,
    with the store's URI redacted: a resumed search takes it from the config) and the base whose runs are its
    children in the same store; else ``base`` and None."""
    from thresher.train.tracking import client, store_uri

    opts = (base.get("tracking") or {}).get("mlflow")
    if opts is None:
        return base, None
    record = Path(output, MLFLOW_RUN)
    uri = store_uri(opts.get("tracking_uri") or os.path.join(output, "mlruns"))
    if record.exists():
        search = {"tracking_uri": uri, "run_id": json.loads(record.read_text())["run_id"]}
    else:
        mlflow = client(uri)
        name = opts.get("experiment", "thresher")
        experiment = mlflow.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(name)
        run = mlflow.create_run(
            experiment_id,
            run_name=Path(output).name,
            tags={
                "thresher.tune": cfg.output.path,
                "thresher.search": cfg.search,
                "thresher.metric": f"{cfg.mode} {cfg.metric}",
            },
        )
        for key, dist in cfg.space.items():
            mlflow.log_param(run.info.run_id, f"space.{key}", json.dumps({dist.kind: getattr(dist, dist.kind)}))
        search = {"tracking_uri": uri, "run_id": run.info.run_id}
        record.write_text(json.dumps(redact_data(search)))
    nested = {**opts, "tracking_uri": search["tracking_uri"], "parent_run_id": search["run_id"]}
    return {**base, "tracking": {**base["tracking"], "mlflow": nested}}, search


def _end_search_run(search: dict, result: dict) -> None:
    """The best trial and its value on the search's MLflow run, which ends."""
    from thresher.train.tracking import client

    mlflow = client(search["tracking_uri"])
    best = result["best"]
    mlflow.set_tag(search["run_id"], "thresher.best_trial", best["id"])
    mlflow.log_metric(search["run_id"], f"best_{result['metric']}", best["value"])
    for key, value in best["params"].items():
        mlflow.log_param(search["run_id"], f"best.{key}", value)
    mlflow.set_terminated(search["run_id"])


def _curve(result, metric: str) -> list[dict]:
    df = result.metrics_dataframe
    if df is None or metric not in df or "step" not in df:
        return []
    rows = df[["step", metric]].dropna()
    return [{"step": int(s), "value": float(v)} for s, v in zip(rows["step"], rows[metric])]


def _trial_row(result, cfg: TuneConfig, output: str) -> dict:
    """A trial's row of tune.json: its folder, and ``output`` in its error, named as the config gives them."""
    trial_id = Path(result.path).name
    folder = Path(output, TRIALS, trial_id)
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else None
    curve = _curve(result, cfg.metric)
    pick = min if cfg.mode == "min" else max
    best = pick(curve, key=lambda p: p["value"]) if curve else None
    state = "failed" if result.error else "completed" if metrics else "stopped"
    value = None
    if metrics:  # the metric of the saved model: its best evaluation with eval.save_best, else the last one
        model_step = metrics["model_step"]
        value = next((p["value"] for p in curve if p["step"] == model_step), None)
    return {
        "id": trial_id,
        "params": result.config,
        "state": state,
        "value": value,
        "best": best,
        "curve": curve,
        "steps": curve[-1]["step"] if curve else 0,
        "output": join(cfg.output.path, TRIALS, trial_id),
        "seconds": (result.metrics or {}).get("time_total_s"),
        "tokens_per_s": metrics["tokens_per_s"] if metrics else None,
        "train_seconds": metrics["train_seconds"] if metrics else None,
        "error": str(result.error).strip().splitlines()[-1].replace(output, cfg.output.path) if result.error else None,
    }


def _export_best(best: dict, base: dict, output: str, given: str, curated: dict[str, str] | None) -> dict:
    """``best_config.yaml`` (the base with the best values, training into ``<output>/best``, named as ``given``:
    it runs from where the search ran; curation choices as the train split they curated) and ``best/`` (the best
    trial's model and metrics)."""
    folder, trial = Path(output, BEST), Path(output, TRIALS, best["id"])
    config = trial_config(base, best["params"], str(folder), curated)
    values = {**training_params(best["params"], curated), "output.path": join(given, BEST)}
    text = yaml.safe_dump(redact_data(with_params(base, values)), sort_keys=False)
    Path(output, BEST_CONFIG).write_text(f"# thresher tune: trial {best['id']}, {json.dumps(best['params'])}\n{text}")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(trial / "model", folder / "model")
    shutil.copy2(trial / "metrics.json", folder / "metrics.json")
    return {
        "id": best["id"],
        "params": best["params"],
        "value": best["value"],
        "config": join(given, BEST_CONFIG),
        "model": join(given, BEST, "model"),
        "method": config.method,
    }


def _curate(cfg: TuneConfig, base: dict, address: str | None) -> tuple[dict[str, str], list[dict]]:
    """Every combination of the space's curation choices curated before the trials (the stages they share once):
    combination -> its train split's folder, and one row per combination (its choices, what it kept and cost)."""
    from thresher.core.storage import Storage
    from thresher.evaluate.curation import chain, curate, data_paths, plan_runs, summary

    options = {combination(p): p for p in combinations(cfg)}
    runs = plan_runs(
        base, {key: chain(base, curation_change(p), "curate") for key, p in options.items()}, cfg.output.path
    )
    with console().phase("curate the search's data"):
        manifests = curate([r for key in options for r in runs[key]], base, Storage.from_options(None), address)
    curated = {key: data_paths(runs[key][-1], base)["train"] for key in options}
    rows = [{"params": p, **summary(runs[key], manifests), "train": curated[key]} for key, p in options.items()]
    return curated, rows


def _no_trial_completed(trials: list[dict], given: str) -> str:
    """Why the search has no best trial (the trials' states, the first failure's error) and what to do next."""
    states = Counter(t["state"] for t in trials)
    failed = next((t for t in trials if t["error"]), None)
    what = f"no trial completed ({', '.join(f'{n} {state}' for state, n in states.items())})"
    if failed is None:
        return f"{what}; delete {given} to start the search over"
    return (
        f"{what}; trial {failed['id']} failed with {failed['error']}. Fix that and run the same command again "
        f"(it runs the failed trials again), or delete {given} to start the search over"
    )


def run(cfg: TuneConfig, address: str | None = None) -> dict:
    """Run (or resume) the search; returns the content of ``<output>/tune.json``."""
    from thresher.evaluate.tune_report import render_html, render_markdown

    base = base_train(cfg)
    train = check(cfg, base)
    curation = base_curation(cfg) if any(k.startswith(CURATE) for k in cfg.space) else None
    if curation is None:
        check_inputs(train, lambda key: "train")
    else:  # the train split is curated later: the validation data and the model now
        check_inputs(
            train.model_copy(update={"data": train.data.model_copy(update={"train": train.data.validation})}),
            lambda key: "train",
        )
    output = os.path.abspath(cfg.output.path)  # Ray Tune's storage; the outputs name cfg.output.path
    started = time.perf_counter()
    with ray_session(address, ray_train=True) as cluster:
        check_trials_fit(cfg, base, train, cluster)  # before the record: a refused config leaves nothing behind
        _check_record(cfg, base, output)
        trial_base, search_run = _search_run(cfg, base, output)
        curated, curation_rows = _curate(cfg, curation, address) if curation is not None else (None, None)
        concurrent = cfg.max_concurrent_trials or trials_that_fit(train, cluster)
        tuner, resumed = _tuner(cfg, trial_base, output, concurrent, curated)
        console().print(
            f"{cfg.num_samples} trials, {concurrent} at a time ({cfg.search} search"
            f"{', asha' if cfg.scheduler else ''}); each into {join(cfg.output.path, TRIALS)}/TRIAL_ID"
        )
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # the search's state saved at most 1 s old
        with console().phase("tune"), ending_at_once(address):
            # in this thread: in a worker thread, a resumed search did not finish within 900 s in CI
            grid = tuner.fit()
    trials = sorted((_trial_row(r, cfg, output) for r in grid), key=lambda t: t["id"])
    done = [t for t in trials if t["value"] is not None]
    if not done:
        raise RuntimeError(_no_trial_completed(trials, cfg.output.path))
    best = (min if cfg.mode == "min" else max)(done, key=lambda t: t["value"])
    result = {
        "output": cfg.output.path,
        "metric": cfg.metric,
        "mode": cfg.mode,
        "search": cfg.search,
        "scheduler": cfg.scheduler.model_dump() if cfg.scheduler else None,
        "num_samples": cfg.num_samples,
        "max_concurrent_trials": concurrent,
        "resumed": resumed,
        "trials": trials,
        "best": _export_best(best, base, output, cfg.output.path, curated),
        "curation": curation_rows,
        "model": train.model.model_dump(),
        "seconds": time.perf_counter() - started,
        "cpus": os.cpu_count(),
        "versions": {d: metadata.version(d) for d in ("thresher", "ray", "torch", "transformers", "peft")},
    }
    if search_run:
        _end_search_run(search_run, result)
        store = base["tracking"]["mlflow"].get("tracking_uri") or join(cfg.output.path, "mlruns")  # as given
        result["mlflow"] = {"tracking_uri": store, "run_id": search_run["run_id"]}
    result = redact_data(result)
    Path(output, TUNE_JSON).write_text(json.dumps(result, indent=2))
    Path(output, TUNE_HTML).write_text(render_html(result))
    console().print(render_markdown(result))
    return result


def main(data: dict[str, Any], address: str | None = None) -> dict:
    """Validate the tune config mapping, run it; a wrong key is a ConfigError naming it (exit 2)."""
    return run(validate(TuneConfig, data), address=address)
