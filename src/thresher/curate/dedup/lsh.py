"""LSH banding: band keys in columns, (bucket, node) rows for a group of bands, star edges per bucket, and
the verification of candidate edges.

Nodes are the records' internal keys (int64). A record's band ``i`` key is a 64-bit hash of signature rows ``i*r .. i*r + r - 1`` with the band index mixed
in, so the keys of all bands share one key space. Records whose keys are equal in some band are candidates;
a bucket (all records with one key) becomes a star: every member linked to the bucket's smallest node, so a
bucket of ``m`` records gives ``m - 1`` edges, not ``m (m - 1) / 2`` pairs.

Verification (:func:`verified_edges`) keeps the candidate edges whose two records a similarity test accepts:
each endpoint's value (its signature, or its shingle hashes) is taken from the key rows of the endpoints only,
and the values reach the edges by broadcast when they are small, else by two joins.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.execution.rows import KeyRows
from thresher.curate.execution.worker import cached_for, fetched, fetched_value

log = logging.getLogger(__name__)
BAND_PREFIX = "_dedup_band_"
EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])  # nodes: internal keys


def band_column(i: int) -> str:
    return f"{BAND_PREFIX}{i:03d}"


def bucket_rows(batch: pa.Table, node: str, bands: range) -> pa.Table:
    """One row ``(bucket, node)`` per record and band of ``bands``, for records with band keys."""
    has = pc.is_valid(batch[band_column(bands.start)])
    batch = batch.filter(has)
    keys = np.stack([batch[band_column(i)].to_numpy() for i in bands], axis=1) if batch.num_rows else np.zeros((0, 1))
    nodes = batch[node].to_numpy() if batch.num_rows else np.zeros(0, np.int64)
    return pa.table({"bucket": pa.array(keys.ravel(), pa.int64()), "node": pa.array(np.repeat(nodes, len(bands)))})


def bucket_edges(batch: pa.Table) -> pa.Table:
    """Star edges ``(u, v)``, ``v`` the smallest node of the bucket and ``u`` another member, without repeats.

    The batch must hold every row of each of its buckets (a hash partition by bucket)."""
    batch = batch.filter(pc.is_valid(batch["bucket"]))
    if batch.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    nodes, ranks = np.unique(batch["node"].to_numpy(), return_inverse=True)
    return _edges(_star_codes(batch["bucket"].to_numpy(), ranks), nodes)


def band_edges(batch: pa.Table, node: str, bands: range) -> pa.Table:
    """The star edges of every bucket of ``bands`` (as :func:`bucket_edges`), from key rows that hold all of each
    bucket's records; one band at a time, so memory stays about that of the key rows whatever the bands."""
    if batch.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    nodes, ranks = np.unique(batch[node].to_numpy(), return_inverse=True)
    codes = []
    for i in bands:
        buckets = batch[band_column(i)]
        if buckets.null_count:
            valid = buckets.is_valid().to_numpy(zero_copy_only=False)
            codes.append(_star_codes(buckets.filter(buckets.is_valid()).to_numpy(), ranks[valid]))
        else:
            codes.append(_star_codes(buckets.to_numpy(), ranks))
    return _edges(np.concatenate(codes), nodes)


def _star_codes(buckets: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The star edges of the buckets with two or more members: each member but the one of smallest rank, linked to
    that one, coded ``member rank << 32 | centre rank`` (ranks: positions in the sorted distinct nodes)."""
    if len(buckets) < 2:
        return np.zeros(0, np.int64)
    order = np.argsort(buckets)
    buckets, ranks = buckets[order], ranks[order].astype(np.int64)
    first = np.ones(len(buckets), bool)
    np.not_equal(buckets[1:], buckets[:-1], out=first[1:])
    centre = np.minimum.reduceat(ranks, np.flatnonzero(first))[np.cumsum(first) - 1]
    linked = ranks != centre
    return (ranks[linked] << 32) | centre[linked]


def _edges(codes: np.ndarray, nodes: np.ndarray) -> pa.Table:
    """Edges ``(u, v)`` of the nodes whose ranks ``codes`` pairs (``_star_codes``), once each, in code order."""
    codes = np.unique(codes)
    return pa.table({"u": nodes[codes >> 32], "v": nodes[codes & 0xFFFFFFFF]}, schema=EDGE_SCHEMA)


def verified_edges(
    edges, keys, node: str, value: str, value_type: pa.DataType, similar, partitions: int, limit_rows: int
):
    """The ``edges`` whose endpoints' values pass ``similar(values_u, values_v) -> bool array``; the values are the
    ``value`` column of the key rows ``keys`` (a list of sources) whose ``node`` column is the endpoint.

    Only the endpoints' values are taken (a semi-join): the key rows are filtered by the edges themselves when
    they are at most ``limit_rows``, else by a Bloom filter of the endpoints (built on the workers, OR-reduced by
    a tree of tasks, never on the driver). The values go to the edges by broadcast when few, else by two joins."""
    refs = edges.broadcast(limit_rows)
    bloom = None if refs is not None else endpoint_bloom(edges)
    schema = pa.schema([("node", pa.int64()), ("value", value_type)])
    parts = [k.map_blocks(_node_values, node, value, refs, bloom, schema, columns=[node, value]) for k in keys]
    values = functools.reduce(lambda a, b: a.concat(b), parts)
    value_refs = values.broadcast(limit_rows)
    log.info(
        "lsh: %d candidate edges; values of %d endpoints, %s",
        edges.count(),
        values.count(),
        "broadcast" if value_refs is not None else "joined",
    )
    if value_refs is not None:
        return edges.map_blocks(_similar_broadcast, value_refs, schema, similar)
    left = edges.join(values.rename_columns({"node": "u", "value": "value_u"}), "inner", partitions, ["u"])
    both = left.join(values.rename_columns({"node": "v", "value": "value_v"}), "inner", partitions, ["v"])
    return both.map_blocks(_similar_joined, similar)


BLOOM_HASHES = 4


def _bloom_positions(nodes: pa.Array | pa.ChunkedArray, bits: int) -> np.ndarray:
    """(n, BLOOM_HASHES) bit positions of node keys (int64; double hashing)."""
    values = nodes.to_numpy().astype(np.uint64)
    h1 = _mix(values ^ np.uint64(0x243F6A8885A308D3))
    h2 = _mix(values ^ np.uint64(0x13198A2E03707344)) | np.uint64(1)
    steps = np.arange(BLOOM_HASHES, dtype=np.uint64)
    return ((h1[:, None] + steps[None, :] * h2[:, None]) % np.uint64(bits)).astype(np.int64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _block_bloom(edges: pa.Table, bits: int) -> pa.Table:
    filt = np.zeros(bits, dtype=bool)
    for col in ("u", "v"):
        filt[_bloom_positions(edges[col], bits).ravel()] = True
    return pa.table({"bloom": [np.packbits(filt).tobytes()]})


def endpoint_bloom(edges: KeyRows):
    """A handle to a Bloom filter (packed bits) of the edges' endpoints, about 0.2% false positives."""
    bits = max(1 << 16, 1 << int(np.ceil(np.log2(max(1, edges.count()) * 2 * 16))))
    return edges.map_blocks(_block_bloom, bits).reduce_or("bloom")


def _node_values(batch: pa.Table, node: str, value: str, edge_refs: list | None, bloom, schema: pa.Schema) -> pa.Table:
    """``(node, value)`` of the key rows that are (or, with a Bloom filter, may be) an endpoint of an edge."""
    batch = batch.filter(pc.is_valid(batch[node]))
    nodes = batch[node].to_numpy()
    if edge_refs is not None:
        endpoints = _endpoints(edge_refs)
        at = np.minimum(np.searchsorted(endpoints, nodes), len(endpoints) - 1)
        batch = batch.filter(pa.array(endpoints[at] == nodes)) if len(endpoints) else batch.slice(0, 0)
    if bloom is not None and batch.num_rows:
        filt = _unpacked(bloom)
        batch = batch.filter(pa.array(filt[_bloom_positions(batch[node], len(filt))].all(axis=1)))
    return pa.table([batch[node], batch[value].cast(schema.field("value").type)], schema=schema)


def _endpoints(edge_refs: list) -> np.ndarray:
    """The broadcast edges' endpoints, sorted and unique (once per worker process)."""

    def make() -> np.ndarray:
        edges = fetched(edge_refs, EDGE_SCHEMA)
        return np.unique(np.concatenate([edges["u"].to_numpy(), edges["v"].to_numpy()]))

    return cached_for("endpoints", edge_refs, make)


def _unpacked(bloom) -> np.ndarray:
    """The Bloom filter's bits as booleans (once per worker process)."""
    return fetched_value("bloom", bloom, lambda bits: np.unpackbits(np.frombuffer(bits, dtype=np.uint8)).astype(bool))


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
    under the LSH S-curve 1 - (1 - s^r)^b (the choice datasketch's MinHashLSH makes).

    The areas are integrals of polynomials of degree b * r <= num_perm, so Gauss-Legendre quadrature with
    num_perm / 2 + 1 nodes computes them exactly (up to rounding), for all (b, r) at once."""
    b, r = (np.array(v) for v in zip(*[(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]))
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def area(f, lo: float, hi: float) -> np.ndarray:
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2
        return (hi - lo) / 2 * (f(s[None, :]) @ weights)

    miss = lambda s: (1 - s ** r[:, None]) ** b[:, None]  # noqa: E731  P(no band agrees) at similarity s
    err = fp_weight * area(lambda s: 1 - miss(s), 0.0, threshold) + fn_weight * area(miss, threshold, 1.0)
    best = int(np.argmin(err))  # the first minimum, in datasketch's order
    return int(b[best]), int(r[best])
