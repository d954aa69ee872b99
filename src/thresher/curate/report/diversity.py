"""Diversity and coverage of the kept records in embedding space (``embed`` + ``dedup_semantic``).

Each written slice contributes, per destination (``data`` or a split): its record count, the sum of its
embeddings (for the centroid), its records per k-means cluster (``semantic_kmeans``), and the ``SAMPLE_VECTORS``
embeddings whose id hash is smallest (float16; every slice keeps its own smallest, so the merge keeps the smallest
overall: a uniform sample of the destination), plus up to ``SNIPPETS`` smallest-hash snippets per cluster. The
driver merges these small summaries and reads the summary of the stage that declares this section from the manifest
(``metrics.dedup_semantic``: cluster sizes before dedup, mean cosine to the centroid).

Reported: the entropy of kept records over clusters (nats; normalised by log k; its exponent, the effective
number of clusters) and coverage (the share of clusters that keep at least one record), the semantic
near-duplicate rate, and per split against the first split (train, when there is one): the cosine between
centroids, the Jensen-Shannon divergence of their cluster distributions and the MMD^2 between their samples
(Gaussian kernel, bandwidth by the median heuristic, unbiased estimate); and snippets of the densest clusters.
"""

from __future__ import annotations

import base64
import heapq
import math

import numpy as np
import pyarrow as pa
import xxhash

from thresher.curate.dedup.semantic import as_matrix
from thresher.curate.report import Section, table_html

KMEANS = "semantic_kmeans"
SAMPLE_VECTORS = 128
SNIPPETS = 2
SNIPPET = 160
DENSEST = 3


def _hash(value) -> int:
    return xxhash.xxh64_intdigest(str(value).encode())


def _vector_column(table: pa.Table) -> str | None:
    """The first column of float vectors (the embeddings)."""
    for field in table.schema:
        t = field.type.storage_type if isinstance(field.type, pa.ExtensionType) else field.type
        is_list = pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
        if is_list and pa.types.is_floating(t.value_type):
            return field.name
    return None


def _encode(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype(np.float16).tobytes()).decode()


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.float16).astype(np.float64)


def _destination(table: pa.Table, text_field: str) -> dict | None:
    column = _vector_column(table)
    if column is None or not table.num_rows:
        return None
    vectors, valid = as_matrix(table[column])
    ids = table["id"].to_pylist() if "id" in table.column_names else list(range(table.num_rows))
    hashes = [_hash(i) for i in ids]
    rows = np.flatnonzero(valid)
    if not len(rows):
        return None
    vectors = vectors[rows].astype(np.float64)
    sample = heapq.nsmallest(SAMPLE_VECTORS, range(len(rows)), key=lambda r: hashes[rows[r]])
    out = {
        "records": int(len(rows)),
        "sum": vectors.sum(axis=0).tolist(),
        "sample": [[hashes[rows[r]], _encode(vectors[r])] for r in sample],
        "clusters": {},
        "snippets": {},
    }
    if KMEANS in table.column_names:
        clusters = table[KMEANS].to_pylist()
        texts = table[text_field].to_pylist() if text_field in table.column_names else [None] * table.num_rows
        for r, cluster in enumerate(clusters):
            if cluster is None:
                continue
            key = str(cluster)
            out["clusters"][key] = out["clusters"].get(key, 0) + 1
            shown = out["snippets"].setdefault(key, [])
            shown.append([hashes[r], str(ids[r]), " ".join(str(texts[r] or "").split())[:SNIPPET]])
        out["snippets"] = {k: sorted(v)[:SNIPPETS] for k, v in out["snippets"].items()}
    return out


def _merge_destination(a: dict, b: dict) -> dict:
    clusters = dict(a["clusters"])
    for k, n in b["clusters"].items():
        clusters[k] = clusters.get(k, 0) + n
    snippets = {
        k: sorted(a["snippets"].get(k, []) + b["snippets"].get(k, []))[:SNIPPETS]
        for k in set(a["snippets"]) | set(b["snippets"])
    }
    return {
        "records": a["records"] + b["records"],
        "sum": (np.add(a["sum"], b["sum"])).tolist(),
        "sample": heapq.nsmallest(SAMPLE_VECTORS, a["sample"] + b["sample"]),
        "clusters": clusters,
        "snippets": snippets,
    }


def mmd2(x: np.ndarray, y: np.ndarray) -> float | None:
    """Unbiased MMD^2 between samples ``x`` and ``y`` with a Gaussian kernel (median-distance bandwidth)."""
    if len(x) < 2 or len(y) < 2:
        return None
    both = np.vstack([x, y])
    squared = np.maximum((both**2).sum(1)[:, None] + (both**2).sum(1)[None, :] - 2 * both @ both.T, 0)
    median = np.median(squared[np.triu_indices(len(both), 1)])
    kernel = np.exp(-squared / (median or 1.0))
    n = len(x)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    m = len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def js_divergence(p: dict, q: dict) -> float | None:
    """Jensen-Shannon divergence (nats) between two cluster histograms."""
    keys = sorted(set(p) | set(q))
    a, b = np.array([p.get(k, 0) for k in keys], float), np.array([q.get(k, 0) for k in keys], float)
    if not a.sum() or not b.sum():
        return None
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x):
        nz = x > 0
        return float((x[nz] * np.log(x[nz] / m[nz])).sum())

    return (kl(a) + kl(b)) / 2


class Diversity(Section):
    name = "diversity"
    title = "Diversity and coverage (embeddings)"
    order = 55

    def collect(self, kept, rejected, text_field):
        out = {}
        for dest, table in kept.items():
            summary = _destination(table, text_field)
            if summary is not None:
                out[dest] = summary
        return out or None

    def merge(self, a, b):
        if a is None or b is None:
            return a or b
        return {
            d: _merge_destination(a[d], b[d]) if d in a and d in b else a.get(d) or b.get(d) for d in set(a) | set(b)
        }

    def summarize(self, collected, manifest):
        if not collected:
            return None
        declared = next(iter(self.run_stages(manifest)), None)
        metrics = manifest.get("metrics", {}).get(declared, {}) if declared else {}
        stage = manifest.get("counts", {}).get("by_stage", {}).get(declared) if declared else None
        clusters: dict[str, int] = {}
        for d in collected.values():
            for k, n in d["clusters"].items():
                clusters[k] = clusters.get(k, 0) + n
        k = metrics.get("clusters") or len(clusters)
        total = sum(clusters.values())
        summary = {"records": sum(d["records"] for d in collected.values()), "clusters": k}
        if total:
            p = np.array(list(clusters.values()), float) / total
            entropy = float(-(p * np.log(p)).sum()) + 0.0  # (no -0.0)
            summary.update(
                entropy=round(entropy, 4),
                normalized_entropy=round(entropy / math.log(k), 4) if k > 1 else None,
                effective_clusters=round(math.exp(entropy), 2),
                coverage=round(len(clusters) / k, 4),
            )
        if stage:
            summary["near_duplicate_rate"] = round(stage["rejected"] / stage["in"], 4) if stage["in"] else None
        summary["splits"] = self.splits(collected)
        summary["densest"] = self.densest(metrics, collected)
        return summary

    def splits(self, collected: dict) -> dict:
        names = sorted(collected, key=lambda d: (not d.endswith("/train"), d))
        base = collected[names[0]]
        base_centroid = np.asarray(base["sum"]) / base["records"]
        base_sample = np.array([_decode(v) for _, v in base["sample"]])
        out = {}
        for name in names:
            d = collected[name]
            centroid = np.asarray(d["sum"]) / d["records"]
            cosine = float(centroid @ base_centroid / (np.linalg.norm(centroid) * np.linalg.norm(base_centroid) or 1))
            distance = mmd2(np.array([_decode(v) for _, v in d["sample"]]), base_sample) if name != names[0] else None
            out[name] = {
                "records": d["records"],
                "against": names[0],
                "centroid_cosine": round(cosine, 4),
                "mmd2": None if distance is None else round(distance, 5),
                "js_divergence": None if name == names[0] else js_divergence(d["clusters"], base["clusters"]),
            }
        return out

    def densest(self, metrics: dict, collected: dict) -> list[dict]:
        """The clusters of at least two records with the highest mean cosine to their centroid."""
        sizes, density = metrics.get("cluster_sizes", []), metrics.get("cluster_density", [])
        ranked = sorted(
            (i for i, s in enumerate(sizes) if s >= 2 and density[i] is not None), key=lambda i: (-density[i], i)
        )[:DENSEST]
        out = []
        for i in ranked:
            snippets = sorted(s for d in collected.values() for s in d["snippets"].get(str(i), []))[:SNIPPETS]
            out.append(
                {
                    "cluster": i,
                    "records": sizes[i],
                    "density": density[i],
                    "examples": [{"id": rid, "snippet": text} for _, rid, text in snippets],
                }
            )
        return out

    def html(self, summary):
        keys = [
            "records",
            "clusters",
            "entropy",
            "normalized_entropy",
            "effective_clusters",
            "coverage",
            "near_duplicate_rate",
        ]
        out = table_html(["measure", "value"], [[k, summary[k]] for k in keys if summary.get(k) is not None])
        rows = [
            [
                name,
                s["records"],
                s["against"],
                s["centroid_cosine"],
                "-" if s["mmd2"] is None else s["mmd2"],
                "-" if s["js_divergence"] is None else s["js_divergence"],
            ]
            for name, s in summary["splits"].items()
        ]
        out += "<h3>Distributions</h3>" + table_html(
            ["destination", "records", "against", "centroid cosine", "MMD^2", "JS divergence (clusters)"], rows
        )
        for c in summary["densest"]:
            out += (
                f"<h4>cluster {c['cluster']}: {c['records']} records, mean cosine to centroid {c['density']:.3f}</h4>"
                + table_html(["id", "text"], [[e["id"], e["snippet"]] for e in c["examples"]])
            )
        return out
