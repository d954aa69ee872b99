"""The ``thresher`` command line: parse arguments, load configs, hand over, map errors to exit codes.

Exit codes: 0 success; 2 usage or config error (the message names the key or path); 1 the run failed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cluster.config import ConfigError, apply_overrides, load_yaml


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thresher", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("curate", help="run a curation config")
    c.add_argument("config")
    c.add_argument("--input", action="append", metavar="URI", help="input path(s), replacing input.paths")
    c.add_argument("--output", metavar="URI", help="output path, replacing output.path")
    c.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    r = sub.add_parser("report", help="re-render report.html/report.json of a finished run")
    r.add_argument("run_uri")
    return p


def _config(args) -> dict:
    data = load_yaml(args.config)
    if getattr(args, "input", None):
        data.setdefault("input", {})["paths"] = args.input
    if getattr(args, "output", None):
        data.setdefault("output", {})["path"] = args.output
    return apply_overrides(data, args.set)


def _curate(args) -> int:
    from pipelines.config import parse_config
    from pipelines.runner import run
    from pipelines.summary import summary_table

    manifest = run(parse_config(_config(args)), address=args.address)
    print(summary_table(manifest))
    return 0


def _report(args) -> int:
    from cluster.storage import Storage
    from pipelines.runner import rerender_report

    rerender_report(args.run_uri, Storage.from_options(None))
    print(f"wrote {args.run_uri}/report.json and report.html")
    return 0


COMMANDS = {"curate": _curate, "report": _report}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"thresher: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thresher: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the run failed: say why, exit 1
        logging.getLogger("thresher").debug("run failed", exc_info=True)
        print(f"thresher: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
