"""Connected components of a graph held as a Ray Data dataset of edges, by alternating large-star and
small-star rounds (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).

Edges are rows ``(u, v)`` of sortable node keys. Each round repartitions the edges by node (a hash shuffle)
and processes every partition with pandas, so no process ever holds more than one partition of the edges.
The rounds stop when an order-independent fingerprint of the edge set stops changing; the graph is then a
set of stars whose centres are the minimum node of each component.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import xxhash

log = logging.getLogger(__name__)


def _dedup(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["u"] != df["v"]]
    return df.drop_duplicates(ignore_index=True)


def _large_star(df: pd.DataFrame) -> pd.DataFrame:
    """Per node u: link every larger neighbour to the smallest node of u's closed neighbourhood."""
    df = _dedup(pd.DataFrame(df))
    if df.empty:
        return pd.DataFrame({"u": pd.Series(dtype=object), "v": pd.Series(dtype=object)})
    m = np.minimum(df.groupby("u")["v"].transform("min").to_numpy(dtype=object), df["u"].to_numpy(dtype=object))
    larger = (df["v"] > df["u"]).to_numpy()
    return _dedup(pd.DataFrame({"u": df["v"].to_numpy(dtype=object)[larger], "v": m[larger]}))


def _small_star(df: pd.DataFrame) -> pd.DataFrame:
    """Per node u (edges oriented u > v): link u and its smaller neighbours to the smallest of them."""
    df = _dedup(pd.DataFrame(df))
    if df.empty:
        return pd.DataFrame({"u": pd.Series(dtype=object), "v": pd.Series(dtype=object), "fp": pd.Series(dtype=np.int64)})
    m = df.groupby("u")["v"].transform("min").to_numpy(dtype=object)
    out = pd.DataFrame({"u": np.concatenate([df["v"].to_numpy(dtype=object), df["u"].unique()]),
                        "v": np.concatenate([m, df.groupby("u")["v"].min().reindex(df["u"].unique()).to_numpy(dtype=object)])})
    out = _dedup(out)
    out["fp"] = np.array([xxhash.xxh32_intdigest(f"{a}\x1f{b}".encode()) for a, b in zip(out["u"], out["v"])], dtype=np.int64)
    return out


def _both_directions(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"u": np.concatenate([df["u"], df["v"]]), "v": np.concatenate([df["v"], df["u"]])})


def _larger_first(df: pd.DataFrame) -> pd.DataFrame:
    u, v = df["u"].to_numpy(dtype=object), df["v"].to_numpy(dtype=object)
    return pd.DataFrame({"u": np.maximum(u, v), "v": np.minimum(u, v)})


def _roots(df: pd.DataFrame) -> pd.DataFrame:
    df = _dedup(pd.DataFrame(df))
    roots = df.groupby("u")["v"].min()
    return pd.DataFrame({"node": roots.index.to_numpy(dtype=object), "root": roots.to_numpy(dtype=object)})


def _fingerprint(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"n": [len(df)], "fp": [int(df["fp"].sum()) if len(df) else 0]})


def connected_components(edges, partitions: int, max_rounds: int = 64):
    """``(node, root)`` for every node with an edge: ``root`` is the smallest node of its component."""
    step = dict(batch_format="pandas", batch_size=None)
    previous = None
    for round_ in range(1, max_rounds + 1):
        edges = edges.map_batches(_both_directions, **step).repartition(partitions, keys=["u"])
        edges = edges.map_batches(_large_star, **step)
        edges = edges.map_batches(_larger_first, **step).repartition(partitions, keys=["u"])
        edges = edges.map_batches(_small_star, **step).materialize()
        sums = edges.map_batches(_fingerprint, **step).take_all()  # one row per block, not the edges
        count = sum(r["n"] for r in sums)
        fingerprint = (count, sum(r["fp"] for r in sums))
        edges = edges.drop_columns(["fp"])
        log.info("connected components: round %d, %d edges", round_, count)
        if fingerprint == previous:
            break
        previous = fingerprint
    else:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
    return edges.map_batches(_larger_first, **step).repartition(partitions, keys=["u"]).map_batches(_roots, **step)
