"""Thresher commands run one after another in this process's working directory on one embedded local Ray, as a
user's shell runs them (Ray's workers share the directory): ``python -m testkit.walkthrough ARGV_JSON``, a JSON list
of argument lists (``["thresher", "curate", ...]`` or ``["python", "-m", ...]``). Stops at the first failure, with
its exit status."""

from __future__ import annotations

import json
import subprocess
import sys
import time


def main() -> int:
    from testkit.ray_cluster import start_local_ray
    from thresher.cli import main as thresher

    start_local_ray(num_cpus=2)
    for argv in json.loads(sys.argv[1]):
        print(f"$ {' '.join(argv)}", file=sys.stderr, flush=True)
        started = time.monotonic()
        code = subprocess.run([sys.executable, *argv[1:]]).returncode if argv[0] == "python" else thresher(argv[1:])
        print(f"{time.monotonic() - started:.0f} s: {' '.join(argv[:3])}", file=sys.stderr, flush=True)
        if code:
            print(f"exit {code}: {' '.join(argv)}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
