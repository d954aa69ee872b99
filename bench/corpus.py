"""Generate a benchmark corpus of a requested size from the shared real text (C4, Common Crawl, Wikipedia).

Documents are real documents, cycled, each given a unique id and a light deterministic variation (a suffix
with its index) so that no two are identical. Output: JSONL shards of about ``--shard-mb`` each.

    python bench/corpus.py --mb 200 --out /tmp/corpus200
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THRESHER_SHARED", ROOT.parent / "shared")) / "data"


def source_documents() -> list[str]:
    """Real documents from the shared data: C4, Common Crawl and Wikipedia paragraphs."""
    web = SHARED / "web"
    if not web.exists():
        raise SystemExit(f"shared data not found at {SHARED} (set THRESHER_SHARED)")
    docs = [json.loads(l)["text"] for l in (web / "c4_demo.jsonl").read_text().splitlines()]
    for f in sorted(web.glob("cc_en_head-*.jsonl")):
        docs += [json.loads(l)["text"] for l in f.read_text().splitlines()]
    docs += [p for p in (web / "wiki_demo.txt").read_text().split("\n") if len(p) > 200]
    return docs


class JsonlShards:
    """Writes JSONL lines to ``part-00000.jsonl``, ``part-00001.jsonl``, ... under ``out``, at most ``shard_mb``
    MB each; counts the lines and bytes written."""

    def __init__(self, out: Path, shard_mb: float):
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.limit = out, int(shard_mb * 1e6)
        self.shard = self.shard_bytes = self.written = self.lines = 0
        self.file = open(out / "part-00000.jsonl", "wb")

    def write(self, line: bytes) -> None:
        if self.shard_bytes + len(line) > self.limit:
            self.file.close()
            self.shard += 1
            self.shard_bytes = 0
            self.file = open(self.out / f"part-{self.shard:05d}.jsonl", "wb")
        self.file.write(line)
        self.shard_bytes += len(line)
        self.written += len(line)
        self.lines += 1

    def close(self) -> None:
        self.file.close()


def generate(mb: float, out: Path, shard_mb: float = 64) -> tuple[int, int]:
    """Write about ``mb`` MB of JSONL under ``out``; returns (documents, bytes)."""
    docs = source_documents()
    shards = JsonlShards(out, shard_mb)
    while shards.written < mb * 1e6:
        n = shards.lines
        text = f"{docs[n % len(docs)]}\n\n(document {n})"
        shards.write(json.dumps({"id": f"doc-{n:09d}", "text": text}).encode() + b"\n")
    shards.close()
    return shards.lines, shards.written


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shard-mb", type=float, default=64)
    a = ap.parse_args()
    docs, size = generate(a.mb, a.out, a.shard_mb)
    print(f"wrote {docs:,} documents, {size / 1e6:.1f} MB to {a.out}")


def sample_tree(root, cpu: dict[int, float]) -> tuple[int, int, int] | None:
    """One sample of a process tree (psutil ``root`` and its descendants): summed PSS, summed RSS, and ``root``'s
    own RSS, in bytes; ``cpu`` gets each process's user + system seconds. None when ``root`` is gone."""
    import psutil

    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    pss = rss = own = 0
    for p in tree:
        try:
            p_pss, p_rss = _pss_rss(p)
            pss, rss = pss + p_pss, rss + p_rss
            own = p_rss if p.pid == root.pid else own
            times = p.cpu_times()
            cpu[p.pid] = times.user + times.system
        except (psutil.Error, OSError):
            pass
    return pss, rss, own


def _pss_rss(p) -> tuple[int, int]:
    """A process's PSS and RSS in bytes, from the kernel's one-line-per-figure ``smaps_rollup`` (psutil's
    ``memory_full_info`` parses every mapping in ``smaps``: tens of milliseconds per Ray process, CPU time the
    measured run loses on a small machine)."""
    try:
        with open(f"/proc/{p.pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if line[:4] in ("Pss:", "Rss:"))
        return int(fields["Pss"].split()[0]) << 10, int(fields["Rss"].split()[0]) << 10
    except FileNotFoundError:
        mem = p.memory_full_info()
        return mem.pss, mem.rss
