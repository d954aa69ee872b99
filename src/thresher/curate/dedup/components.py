"""Connected components of a graph held as key rows of edges (``KeyRows``), by alternating large-star and
small-star steps (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).

Edges are rows ``(u, v)`` of node keys of one type (int64 internal keys for dedup, strings for split groups). Each step hash-partitions the edges by ``u`` (``KeyRows.grouped``; a partition is one block holding every edge of its nodes) and rewrites each partition with Arrow,
so no process holds more than one partition of the edges. The large-star step also counts the nodes that are
neither a leaf nor a centre of a star (one number per block reaches the driver); when there are none, the
graph is a set of stars whose centres are the minimum node of their component, which the result names as
``root`` for every other ``node``.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.execution.rows import KeyRows

log = logging.getLogger(__name__)


def edge_schema(node_type: pa.DataType) -> pa.Schema:
    return pa.schema([("u", node_type), ("v", node_type)])


def _clean(edges: pa.Table, schema: pa.Schema) -> pa.Table:
    """Without self loops and repeated edges."""
    edges = edges.filter(pc.not_equal(edges["u"], edges["v"]))
    return edges.group_by(["u", "v"]).aggregate([]).select(["u", "v"]).cast(schema)


def _neighbour_min(edges: pa.Table) -> pa.Table:
    """``edges`` with column ``m``: the smallest ``v`` of each ``u``."""
    mins = edges.group_by("u").aggregate([("v", "min")]).select(["u", "v_min"]).rename_columns(["u", "m"])
    return edges.join(mins, "u", join_type="inner")


def both_directions(edges: pa.Table, schema: pa.Schema) -> pa.Table:
    edges = edges.select(["u", "v"]).cast(schema)
    return pa.concat_tables([edges, edges.rename_columns(["v", "u"]).select(["u", "v"])])


def larger_first(edges: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.table(
        {"u": pc.max_element_wise(edges["u"], edges["v"]), "v": pc.min_element_wise(edges["u"], edges["v"])}
    ).cast(schema)


def large_star(edges: pa.Table, schema: pa.Schema) -> pa.Table:
    """Per node u (all its edges, both directions): link each larger neighbour to min(u, neighbours).

    Adds ``violations`` (the same number in every row of the block): nodes with both a smaller and a larger
    neighbour, or with two or more smaller ones (a block with violations but no edge gets one null edge to carry
    the count). Where no block has any, the input is already a set of stars
    centred on the minimum of each component: a neighbour x of the minimum r has no larger neighbour, and no
    smaller one but r."""
    edges = _clean(edges, schema)
    if edges.num_rows == 0:
        return schema.empty_table().append_column("violations", pa.array([], pa.int64()))
    e = _neighbour_min(edges)
    smaller = pc.less(e["v"], e["u"])
    degrees = pa.table({"u": e["u"], "s": pc.cast(smaller, pa.int64()), "l": pc.cast(pc.invert(smaller), pa.int64())})
    degrees = degrees.group_by("u").aggregate([("s", "sum"), ("l", "sum")])
    bad = pc.or_(
        pc.greater(degrees["s_sum"], 1), pc.and_(pc.greater(degrees["s_sum"], 0), pc.greater(degrees["l_sum"], 0))
    )
    violations = pc.sum(pc.cast(bad, pa.int64())).as_py() or 0
    e = e.filter(pc.invert(smaller))
    out = _clean(pa.table({"u": e["v"], "v": pc.min_element_wise(e["m"], e["u"])}), schema)
    if violations and out.num_rows == 0:  # a null edge carries the count (the next step drops it)
        out = pa.table({"u": [None], "v": [None]}, schema=schema)
    return out.append_column("violations", pa.array([violations] * out.num_rows, pa.int64()))


def small_star(edges: pa.Table, schema: pa.Schema) -> pa.Table:
    """Per node u (its edges to smaller nodes): link u and each smaller neighbour to the smallest of them."""
    edges = _clean(edges, schema)
    if edges.num_rows == 0:
        return schema.empty_table()
    e = _neighbour_min(edges)
    centres = e.group_by("u").aggregate([("m", "min")]).select(["u", "m_min"]).rename_columns(["v", "m"])
    return _clean(
        pa.concat_tables([e.select(["v", "m"]), centres.select(["v", "m"])]).rename_columns(["u", "v"]), schema
    )


def block_violations(edges: pa.Table) -> pa.Table:
    """One row per block: the violations its large-star step counted."""
    return pa.table({"violations": [edges["violations"][0].as_py() if edges.num_rows else 0]})


def smallest_roots(u: list[str], v: list[str]) -> dict[str, str]:
    """Union-find over edges: every node -> the smallest node of its component."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u, v):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def block_roots(edges: pa.Table, schema: pa.Schema) -> pa.Table:
    """``(node, root)`` of every non-root node of the edges of one block (union-find in this task)."""
    roots = smallest_roots(edges["u"].to_pylist(), edges["v"].to_pylist())
    pairs = [(n, r) for n, r in roots.items() if n != r]
    return pa.table([[n for n, _ in pairs], [r for _, r in pairs]], schema=schema).rename_columns(["node", "root"])


def connected_components(
    edges: KeyRows,
    partitions: int,
    limit_rows: int,
    node_type: pa.DataType = pa.string(),  # noqa: B008 (an immutable type)
    max_rounds: int = 64,
) -> KeyRows:
    """Dataset ``(node, root)`` for every node with an edge except the roots: ``root`` is the smallest node of
    its component. Up to ``limit_rows`` edges, by union-find in one task; beyond, distributed:

    Steps: both directions, shuffle by ``u``, large-star; then rounds of larger-first, shuffle by ``u``,
    small-star, both directions, shuffle by ``u``, large-star, each followed by a look at the violations the
    last large-star counted. Candidate graphs are mostly stars of a few nodes, and the few nodes linked through
    several bands are settled by one round, so the first look comes after the first round: the common case is
    three shuffles (``KeyRows.grouped``) and one look.
    """
    schema = edge_schema(node_type)
    if edges.count() <= limit_rows:
        return edges.in_one_task(block_roots, schema)
    stepped = edges.map_blocks(both_directions, schema).grouped(["u"], large_star, schema, partitions=partitions)
    for round_ in range(1, max_rounds + 1):
        stepped = (
            stepped.drop_columns(["violations"])
            .map_blocks(larger_first, schema)
            .grouped(["u"], small_star, schema, partitions=partitions)
            .map_blocks(both_directions, schema)
            .grouped(["u"], large_star, schema, partitions=partitions)
        )
        count = sum(r["violations"] for r in stepped.map_blocks(block_violations).to_table().to_pylist())
        log.info("connected components: round %d, %d edges, %d nodes not in stars", round_, stepped.count(), count)
        if count == 0:
            if stepped.count() == 0:  # no edges at all
                return stepped.from_table(schema.empty_table().rename_columns(["node", "root"]))
            # large-star of a star graph: one edge (leaf, centre) per leaf, from the centre's partition
            return stepped.drop_columns(["violations"]).rename_columns({"u": "node", "v": "root"})
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
