"""The ``thresher`` command line: parse arguments, load configs, hand over, map errors to exit codes.

Exit codes: 0 success; 2 usage or config error (the message names the key or path); 1 the run failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from pathlib import Path

from thresher import __version__
from thresher.core.config import ConfigError, apply_overrides, load_yaml, require_extra
from thresher.core.console import LOG_FORMAT, Console, RedactingFormatter, root_cause
from thresher.core.console import current as console
from thresher.core.secrets import redact_text
from thresher.curate.timing import process_started
from thresher.runtime import SIGNAL_EXITS, Terminated, end_on_sigterm

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray's task errors come coloured for a terminal


TRAIN_MODULES = ("torch", "transformers", "peft")  # what train, eval and compare need of the [train] extra


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thresher",
        description="Curate raw text corpora into fine-tuning datasets and fine-tune language models on them, on Ray.",
    )
    p.add_argument("--version", action="version", version=f"thresher {__version__}")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Ray's own output and debug logging on the terminal (default: in the command's log file)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("curate", help="run a curation config")
    c.add_argument("config")
    c.add_argument("--input", action="append", metavar="URI", help="input path(s), replacing input.paths")
    c.add_argument("--output", metavar="URI", help="output path, replacing output.path")
    c.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    t = sub.add_parser("train", help="run a training config (Ray Train)")
    t.add_argument("config")
    t.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    s = sub.add_parser("submit", help="submit a thresher command to a Ray cluster (Ray Jobs API)")
    s.add_argument("--address", help="dashboard URL (default: RAY_ADDRESS or http://127.0.0.1:8265)")
    s.add_argument("--working-dir", default=".", help="uploaded as the job's working_dir (default: .)")
    s.add_argument(
        "--runtime-env",
        metavar="YAML",
        help="more runtime_env fields, e.g. deploy/runtime-env-stock-ray.yaml for a stock Ray cluster",
    )
    s.add_argument("--max-file-mib", type=float, default=10, help="leave larger files out of the upload (0: no limit)")
    s.add_argument("--no-wait", action="store_true", help="print the job id and return")
    s.add_argument(
        "--forward-aws",
        action="store_true",
        help="pass this shell's AWS_* variables to the job (only to an https:// or loopback address)",
    )
    s.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- thresher curate|train ...")

    j = sub.add_parser("jobs", help="list, inspect or stop submitted jobs")
    j.add_argument("action", choices=["list", "status", "logs", "stop"])
    j.add_argument("job_id", nargs="?")
    j.add_argument("--address", help="dashboard URL (default: RAY_ADDRESS or http://127.0.0.1:8265)")

    e = sub.add_parser("eval", help="generate and score on an evaluation set (Ray Data actor pool)")
    e.add_argument("config")
    e.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    m = sub.add_parser("compare", help="train variants (methods, data, options) and evaluate each: one table")
    m.add_argument("config")
    m.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    u = sub.add_parser("tune", help="search training hyperparameters (Ray Tune): trials, best config, best model")
    u.add_argument("config")
    u.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    u.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    r = sub.add_parser("report", help="re-render report.html/report.json of a finished run")
    r.add_argument("run_uri")

    g = sub.add_parser("stages", help="list the curation stages, or show one stage's options and an example")
    g.add_argument("name", nargs="?")

    h = sub.add_parser("schema", help="print the JSON Schema of a config file (for editors checking YAML)")
    h.add_argument("kind", choices=["curate", "train", "eval", "compare", "tune"])
    return p


def _config(args) -> dict:
    data = load_yaml(args.config)
    if getattr(args, "input", None):
        data.setdefault("input", {})["paths"] = args.input
    if getattr(args, "output", None):
        data.setdefault("output", {})["path"] = args.output
    return apply_overrides(data, args.set)


def _curate(args) -> int:
    from thresher.curate.config import parse_config
    from thresher.curate.gates import GATE_FAILED, failures
    from thresher.curate.run_folder import GATE_FAILED_RUN
    from thresher.curate.runner import run
    from thresher.curate.summary import summary_table

    # a command line's run counts from the interpreter's start; a call from Python (tests) from the run's
    manifest = run(parse_config(_config(args)), address=args.address, since=args.since)
    console().print(summary_table(manifest))
    failed = failures(manifest.get("gates", []))
    for line in failed:
        console().error(line)
    if failed and manifest.get("kept_previous_dataset"):
        console().error(
            f"the succeeded dataset already at {manifest['output']} stays in place; this run's data, report and "
            f"manifest ({GATE_FAILED}) are in {manifest['output'].rstrip('/')}/{GATE_FAILED_RUN}"
        )
    elif failed:
        console().error(f"the run's manifest says status: {GATE_FAILED}; thresher train refuses it")
    return 1 if failed else 0


def _train(args) -> int:
    import json

    require_extra(TRAIN_MODULES, "thresher train", "train")
    from thresher.train import main as train

    metrics = train(_config(args), address=args.address)
    summary = {
        k: metrics[k]
        for k in (
            "steps",
            "resumed_from_step",
            "eval_loss",
            "eval_perplexity",
            "best",
            "stopped_early",
            "tokens_per_s",
            "output",
            "checkpoint",
        )
    }
    summary["train_loss"] = metrics["train_loss"][-1]["loss"] if metrics["train_loss"] else None
    console().print(json.dumps(summary, indent=2))
    return 0


def _submit(args) -> int:
    from thresher.jobs import submit

    entry = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not entry:
        raise ConfigError("submit: give the command to run after --, e.g. thresher submit -- thresher curate cfg.yaml")
    if entry[:2] == ["thresher", "curate"]:
        _warn_if_local_output(_parser().parse_args(entry[1:]))
    return submit(
        entry,
        address=args.address,
        working_dir=args.working_dir,
        wait=not args.no_wait,
        forward_aws=args.forward_aws,
        runtime_env_file=args.runtime_env,
        max_file_mib=args.max_file_mib,
    )


def _warn_if_local_output(curate) -> None:
    """A submitted curation should write to s3://: a local output lands on each node's own disk."""
    output = curate.output
    if output is None and Path(curate.config).is_file():
        output = (_config(curate).get("output") or {}).get("path")
    if output and "://" not in str(output):
        print(
            f"thresher: warning: output {output} is a local path: on a cluster each node writes its part to its "
            "own disk, under the job's temporary working dir; use s3://...",
            file=sys.stderr,
        )


def _jobs(args) -> int:
    from thresher.jobs import jobs

    return jobs(args.action, args.job_id, address=args.address)


def _eval(args) -> int:
    import json

    require_extra(TRAIN_MODULES, "thresher eval", "train")
    from thresher.evaluate.evaluation import main as evaluate

    result = evaluate(_config(args), address=args.address)
    console().print(json.dumps({"rows": result["rows"], "metrics": result["metrics"]}, indent=2))
    return 0


def _compare(args) -> int:
    require_extra(TRAIN_MODULES, "thresher compare", "train")
    from thresher.evaluate.compare import main as compare

    result = compare(_config(args), address=args.address)
    console().print(f"wrote {result['output']}/compare.json and compare.html")
    return 0


def _tune(args) -> int:
    require_extra(TRAIN_MODULES, "thresher tune", "train")
    from thresher.evaluate.tune import main as tune

    result = tune(_config(args), address=args.address)
    console().print(
        f"wrote {result['output']}/tune.json, tune.html, best_config.yaml and best/ (trial "
        f"{result['best']['id']}, {result['metric']} {result['best']['value']:.4g})"
    )
    return 0


def _report(args) -> int:
    from thresher.core.storage import Storage
    from thresher.curate.commit import rerender_report

    rerender_report(args.run_uri, Storage.from_options(None))
    console().print(f"wrote {args.run_uri}/report.json and report.html")
    return 0


def _stages(args) -> int:
    from thresher.config_docs import stage_list, stage_page

    print(stage_page(args.name) if args.name else stage_list())
    return 0


def _schema(args) -> int:
    import json

    from thresher.config_docs import config_schema

    print(json.dumps(config_schema(args.kind), indent=2))
    return 0


COMMANDS = {
    "curate": _curate,
    "train": _train,
    "eval": _eval,
    "compare": _compare,
    "tune": _tune,
    "submit": _submit,
    "jobs": _jobs,
    "report": _report,
    "stages": _stages,
    "schema": _schema,
}
# commands whose Ray output goes to a log file (thresher.core.console)
ON_RAY = ("curate", "train", "eval", "compare", "tune", "report")


def _run(args) -> int:
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, BrokenPipeError):
        raise
    except Exception:  # the traceback goes to the run's log file (Ray commands) or shows with --verbose
        logging.getLogger("thresher").log(
            logging.INFO if args.command in ON_RAY else logging.DEBUG, "%s failed", args.command, exc_info=True
        )
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.since = process_started() if argv is None else None
    if argv is None:  # the command's own process (called in-process, e.g. by a test, the caller's handlers stay)
        end_on_sigterm()
    shown: Console | None = None
    try:
        if args.command in ON_RAY:
            with Console(args.command, verbose=args.verbose) as shown:
                return _run(args)
        handler = logging.StreamHandler()
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
        return _run(args)
    except ConfigError as e:
        print(f"thresher: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as e:
        code, said = SIGNAL_EXITS[signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT]
        print(f"thresher: {said}", file=sys.stderr)
        if (
            argv is None
        ):  # the command's own process ends now: its Ray is gone, and the interpreter's exit takes seconds
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except BrokenPipeError:  # the reader stopped reading (| head): what it took is what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at the exit's flush
        return 0
    except Exception as e:  # the run failed: say why, exit 1
        log_file = shown.log_file if shown is not None else None
        if log_file is not None and raised_on_ray(e):  # its text holds the remote traceback: the log has it
            said = f"{root_cause(e)} (raised on Ray; the traceback is in {log_file})"
        else:
            said = f"{type(e).__name__}: {e}"
        print(f"thresher: failed: {ANSI_ESCAPE.sub('', redact_text(said))}", file=sys.stderr)
        return 1


def raised_on_ray(error: BaseException) -> bool:
    """Whether ``error`` is a task's or an actor's, raised on Ray (its text holds the remote traceback)."""
    exceptions = sys.modules.get("ray.exceptions")
    return exceptions is not None and isinstance(error, exceptions.RayError)


if __name__ == "__main__":
    sys.exit(main())
