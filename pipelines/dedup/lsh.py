"""LSH banding: band keys in columns, (bucket, node) rows for a group of bands, star edges per bucket, and
the verification of candidate edges.

A record's band ``i`` key is a 64-bit hash of signature rows ``i*r .. i*r + r - 1`` with the band index mixed
in, so the keys of all bands share one key space. Records whose keys are equal in some band are candidates;
a bucket (all records with one key) becomes a star: every member linked to the bucket's smallest node, so a
bucket of ``m`` records gives ``m - 1`` edges, not ``m (m - 1) / 2`` pairs.

Verification (:func:`verified_edges`) keeps the candidate edges whose two records a similarity test accepts:
each endpoint's value (its signature, or its text) is computed from the records that are endpoints, and the
values reach the edges by broadcast when they are small, else by two joins.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.dedup.datasets import ARROW, broadcast, fetched

log = logging.getLogger(__name__)
BAND_PREFIX = "_dedup_band_"
EDGE_SCHEMA = pa.schema([("u", pa.string()), ("v", pa.string())])


def band_column(i: int) -> str:
    return f"{BAND_PREFIX}{i:03d}"


def bucket_rows(batch: pa.Table, node: str, bands: range) -> pa.Table:
    """One row ``(bucket, node)`` per record and band of ``bands``, for records with band keys."""
    has = pc.is_valid(batch[band_column(bands.start)])
    batch = batch.filter(has)
    keys = np.stack([batch[band_column(i)].to_numpy() for i in bands], axis=1) if batch.num_rows else np.zeros((0, 1))
    nodes = batch[node].combine_chunks() if batch.num_rows else pa.array([], pa.string())
    return pa.table({"bucket": pa.array(keys.ravel(), pa.int64()),
                     "node": nodes.take(pa.array(np.repeat(np.arange(len(nodes)), len(bands)))).cast(pa.string())})


def bucket_edges(batch: pa.Table) -> pa.Table:
    """Star edges ``(u, v)``, ``v`` the smallest node of the bucket and ``u`` another member, without repeats.

    The batch must hold every row of each of its buckets (a hash partition by bucket)."""
    if batch.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    centre = batch.group_by("bucket").aggregate([("node", "min"), ("node", "count")])
    centre = centre.filter(pc.greater(centre["node_count"], 1)).select(["bucket", "node_min"])
    if centre.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    linked = batch.join(centre, "bucket", join_type="inner")
    linked = linked.filter(pc.not_equal(linked["node"], linked["node_min"]))
    edges = pa.table({"u": linked["node"], "v": linked["node_min"]}).cast(EDGE_SCHEMA)
    return edges.group_by(["u", "v"]).aggregate([]).select(["u", "v"])


def verified_edges(edges, records, node: str, text: str, value, value_type: pa.DataType, similar, partitions: int):
    """The ``edges`` whose endpoints' values pass ``similar(values_u, values_v) -> bool array``; a value is
    ``value(texts)`` of the record whose ``node`` column is the endpoint.

    The candidate edges go to the tasks that pick the endpoints' records when they are few (else every keyed
    record gets a value); the values go to the edges when they are few, else two joins bring them."""
    edges = edges.materialize()
    refs = broadcast(edges)
    schema = pa.schema([("node", pa.string()), ("value", value_type)])
    values = records.select_columns([node, text]).map_batches(_node_values, fn_args=(node, text, refs, value, schema),
                                                              **ARROW).materialize()
    value_refs = broadcast(values)
    log.info("lsh: %d candidate edges; values of %d records, %s", edges.count(), values.count(),
             "broadcast" if value_refs is not None else "joined")
    if value_refs is not None:
        return edges.map_batches(_similar_broadcast, fn_args=(value_refs, schema, similar), **ARROW)
    left = edges.join(values.rename_columns({"node": "u", "value": "value_u"}), "inner", partitions, on=("u",))
    both = left.join(values.rename_columns({"node": "v", "value": "value_v"}), "inner", partitions, on=("v",))
    return both.map_batches(_similar_joined, fn_args=(similar,), **ARROW)


def _node_values(batch: pa.Table, node: str, text: str, edge_refs: list | None, value, schema: pa.Schema) -> pa.Table:
    """``(node, value)`` of the records that are an endpoint of an edge (all keyed records without the edges)."""
    keep = pc.is_valid(batch[node])
    if edge_refs is not None:
        edges = fetched(edge_refs, EDGE_SCHEMA)
        endpoints = pa.concat_arrays([edges["u"].chunk(0), edges["v"].chunk(0)])
        keep = pc.and_(keep, pc.is_in(batch[node], value_set=endpoints))
    batch = batch.filter(keep)
    return pa.table([batch[node].cast(pa.string()), value(batch[text])], schema=schema)


def _similar_broadcast(edges: pa.Table, refs: list, schema: pa.Schema, similar) -> pa.Table:
    values = fetched(refs, schema)
    nodes, found = values["node"].chunk(0), values["value"].chunk(0)
    u = found.take(pc.index_in(edges["u"], value_set=nodes))
    v = found.take(pc.index_in(edges["v"], value_set=nodes))
    return edges.select(["u", "v"]).filter(pa.array(similar(u, v)))


def _similar_joined(edges: pa.Table, similar) -> pa.Table:
    return edges.filter(pa.array(similar(edges["value_u"], edges["value_v"]))).select(["u", "v"])


@functools.lru_cache
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted false positive and negative areas
    under the LSH S-curve 1 - (1 - s^r)^b (the choice datasketch's MinHashLSH makes)."""
    from scipy.integrate import quad

    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = quad(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)[0]
            fn = quad(lambda s: (1 - s ** r) ** b, threshold, 1.0)[0]
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best
