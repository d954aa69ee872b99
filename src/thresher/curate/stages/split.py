"""``split``: deterministic, leak-free train/validation/test (or k-fold) assignment; sets ``_split``, so kept
records are written to ``data/<split>/``.

Groups: records that share a value of ``dup_cluster`` (automatically, when the column exists: dedup_fuzzy's
near-duplicate clusters) or of any ``group_by`` field always land in the same split. With ``group_by`` the groups
are the connected components of "shares a value of a grouping field": up to ``DRIVER_LIMIT`` linking edges
(records with two or more grouping values) by union-find on the driver, broadcast to the map tasks as a
value -> component map; beyond, by the distributed connected components of ``thresher.curate.dedup.components`` and a
join (``KeyRows.join``). A record without any grouping value is a group of its own (its id).

Each group gets the 63-bit hash ``xxh64(group key, seed) >> 1`` and goes to split j when its hash falls in the
j-th range of the hash space; the ranges are cut in one of two ways:

* ``exact: true`` (default): so that split sizes match the ratios exactly. Per class of ``stratify`` (or over all
  records), split j receives the largest-remainder rounding of ``n * ratio_j`` records: every split's count of
  every class is within one record of its target (within the size of the largest group when groups have more
  than one record). Pure hashing cannot promise that, so this is a global step over all the key rows:
  a map pass counts records per class in 2^10 hash buckets (the driver sums the per-block arrays), and a
  second one counts records per group inside the buckets that hold a cut, which places every cut exactly. The
  driver holds classes x 2^10 counts plus the groups of the cut buckets (about n / 1024 per cut and class),
  never one entry per record. When the corpus grows, the cuts move a little, and so can the records next to
  them.
* ``exact: false``: fixed ranges from the cumulative ratios, one streaming pass (nothing is counted). A record's
  split never changes when the corpus grows; sizes are binomial around the ratios. No ``stratify``.

With ``stratify`` and groups, a group whose records carry several classes is counted in the smallest class
(sorted as strings): the rows grouped by group hash (in one task, hash-partitioned beyond
``execution.broadcast_limit_rows``) find such groups (only when a grouping column exists), broadcast up to
``DRIVER_LIMIT`` of them, joined beyond. Missing class values form the class ``""``. ``folds: k`` replaces the ratios by k equal
folds written to ``data/fold_0`` .. ``data/fold_{k-1}`` (cross-validation: train on k-1 folds, evaluate on the
remaining one), stratified and grouped the same way. The report's dataset section shows the class balance per
split (``thresher.curate.report.dataset``).

Augmented records (``augmented_from``, from the ``augment`` stage before this one) are grouped with the record they
were made from, so a copy always lands in its source's split; a copy that lands outside the splits its
``augmentation`` names (augment's ``splits``, default ``[train]``) is rejected (reason ``augmented_outside_splits``),
so no copy of a validation or test record is written.

``against`` names earlier finished runs with splits (monthly releases): a record that belongs to a group of one of
their kept records lands in that record's split, and the ratios share out the rest. A reference's index
(``index/split/<keys>/``, ``thresher.curate.dedup.against_runs``: per kept record its id, split and grouping values,
``dup_cluster`` defaulting to its id; never its text) joins the key rows with negative keys and the grouping above
runs over both: a record belongs to a reference record's group when they share a value of a ``group_by`` field, or
its ``dup_cluster`` names the reference record (a dedup stage against that run links a copy it keeps, with
``action: annotate``, that way), directly or through other records. A group with several reference splits takes
that of its first reference row (``against`` order, then index order); the reference rows then leave, the counts
of ``exact`` see only the records no reference placed, and ``metrics.split.placed_by_reference`` counts those it
placed per run.

The stage is global: it decides on the key rows (id, grouping values, class), never on the records. When they are
few enough for one task, the runner hands them over in that task and every step above runs there.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pydantic import Field, field_validator, model_validator

from thresher.curate.augment.config import AUGMENTATION, AUGMENTED_FROM
from thresher.curate.dedup.against_runs import STORED, IndexedStage
from thresher.curate.dedup.components import connected_components, smallest_roots
from thresher.curate.run_folder import RunFolder
from thresher.curate.stage import (
    ID,
    KEY,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    SPLIT,
    StageConfig,
    active,
    reference_keys,
)

GROUP = "_split_group"
LINKS = "_split_links"
HASH = "_split_hash"
CLASS = "_split_class"
PLACED = "_split_placed"  # a reference's split for the rows of its groups ("": none)
PLACED_BY = "_split_placed_by"  # the reference's position in ``against`` (-1: none)
HELPERS = [GROUP, LINKS, HASH, CLASS, PLACED, PLACED_BY]
HASH_SPACE = 1 << 63
BUCKET_SHIFT = 53  # 63-bit hashes -> 2**10 buckets
BUCKETS = 1 << 10
DUP_CLUSTER = "dup_cluster"
KEY_SEP, PART_SEP = "\x1f", "\x1e"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SMALLEST = "_split_smallest_class"
DRIVER_LIMIT = 1_000_000  # linking edges / class-spanning groups handled on the driver (~100 MB) before Ray joins


class SplitConfig(StageConfig):
    ratios: dict[str, float] | None = Field(
        None, description="split name -> fraction (they sum to 1); default train/validation/test 0.8/0.1/0.1"
    )
    folds: int | None = Field(None, ge=2, description="k equal folds fold_0..fold_{k-1} instead of ratios")
    seed: int = Field(0, ge=0, lt=1 << 64, description="seed of the group hashes that place records in splits")
    stratify: str | None = Field(None, description="field whose class proportions every split keeps")
    group_by: list[str] = Field(default_factory=list, description="records sharing a value of any stay together")
    exact: bool = Field(True, description="exact sizes (global counting) or fixed hash ranges (streaming)")
    against: list[str] = Field(
        [],
        description=(
            "finished runs (URIs) with splits: a record in a group of one of their kept records lands in its split"
        ),
    )

    @field_validator("group_by", mode="before")
    @classmethod
    def _one_field(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self):
        if self.ratios is not None and self.folds is not None:
            raise ValueError("give ratios or folds, not both")
        if self.ratios is not None:
            if not self.ratios:
                raise ValueError("ratios: at least one split")
            for name, r in self.ratios.items():
                if not _NAME.fullmatch(name):
                    raise ValueError(f"ratios: split name {name!r} must be a plain folder name ([A-Za-z0-9_.-])")
                if not r > 0:
                    raise ValueError(f"ratios.{name}: must be > 0, got {r}")
            if abs(sum(self.ratios.values()) - 1) > 1e-6:
                raise ValueError(f"ratios must sum to 1, got {sum(self.ratios.values()):g}")
        if self.stratify and not self.exact:
            raise ValueError("stratify needs exact: true (fixed hash ranges cannot keep class proportions)")
        return self

    def fractions(self) -> dict[str, float]:
        if self.folds:
            return {f"fold_{i}": 1 / self.folds for i in range(self.folds)}
        return self.ratios or {"train": 0.8, "validation": 0.1, "test": 0.1}


def _present(value) -> bool:
    if isinstance(value, str):
        return value != ""
    return value is not None and not pd.isna(value)


def largest_remainder(n: int, fractions: list[float]) -> list[int]:
    """Integer sizes summing to ``n``, each within one of ``n * fraction``."""
    exact = np.asarray(fractions, dtype=float) * n
    sizes = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: n - int(sizes.sum())]] += 1
    return sizes.tolist()


def nearest_boundary(counts: np.ndarray, offset: int, target: int) -> int:
    """Index i such that cutting after the first i units (record ``counts``, in hash order, after ``offset``
    records) comes nearest ``target`` records; ties go to the lower cut."""
    cum = offset + np.concatenate([[0], np.cumsum(counts)])
    i = int(np.searchsorted(cum, target))
    if i == len(cum) or (i > 0 and target - cum[i - 1] <= cum[i] - target):
        i -= 1
    return i


class Split(IndexedStage):
    name = "split"
    Config = SplitConfig

    @classmethod
    def splits(cls, options: dict) -> list[str]:
        if options.get("folds"):
            return [f"fold_{i}" for i in range(options["folds"])]
        return list(options.get("ratios") or {"train": 0, "validation": 0, "test": 0})

    @classmethod
    def label_fields(cls, options: dict) -> list[str]:
        return [options["stratify"]] if options.get("stratify") else []

    # in one task every step is local: nothing exceeds ``driver_limit``, so no join or distributed
    # connected components runs
    decides_locally = True

    def __init__(self, config: SplitConfig, ctx):
        super().__init__(config, ctx)
        self.names = list(config.fractions())
        self.group_fields = list(dict.fromkeys([*config.group_by, DUP_CLUSTER]))

    # -- per batch -------------------------------------------------------------------------------

    def _keys(self, batch: pd.DataFrame) -> pd.DataFrame:
        """GROUP: the record's first grouping value (or its id); LINKS: its other values; CLASS; HASH."""
        fields = [f for f in self.group_fields if f in batch.columns]
        columns = [[f"{f}{KEY_SEP}{v}" if _present(v) else None for v in batch[f]] for f in fields]
        groups, links = [], []
        lineage = batch[AUGMENTED_FROM] if AUGMENTED_FROM in batch.columns else None
        for row, (rid, *values) in enumerate(zip(batch["id"], *columns)):
            parts = [p for p in values if p is not None]
            if lineage is not None:  # a record and its augmented copies: one group
                source = lineage.iat[row]
                parts.append(f"id{KEY_SEP}{source if _present(source) else rid}")
            groups.append(parts[0] if parts else f"id{KEY_SEP}{rid}")
            links.append(PART_SEP.join(parts[1:]))
        batch[GROUP] = groups
        batch[LINKS] = links
        if self.config.stratify:
            labels = (
                batch[self.config.stratify]
                if self.config.stratify in batch.columns
                else pd.Series(None, index=batch.index)
            )
            batch[CLASS] = [str(v) if _present(v) else "" for v in labels]
        else:
            batch[CLASS] = ""
        return self._hash(batch)

    def _hash(self, batch: pd.DataFrame) -> pd.DataFrame:
        seed = self.config.seed
        batch[HASH] = np.array([xxhash.xxh64_intdigest(g.encode(), seed) >> 1 for g in batch[GROUP]], dtype=np.int64)
        return batch

    @staticmethod
    def _edges(batch: pd.DataFrame) -> pd.DataFrame:
        u, v = [], []
        for group, links in zip(batch[GROUP], batch[LINKS]):
            for other in links.split(PART_SEP) if links else ():
                u.append(group)
                v.append(other)
        return pd.DataFrame({"u": pd.Series(u, dtype=object), "v": pd.Series(v, dtype=object)})

    def _to_root(self, batch: pd.DataFrame, roots: dict[str, str] | None) -> pd.DataFrame:
        """GROUP becomes its component's root: from ``roots`` (broadcast) or the joined ``root`` column."""
        root = batch.pop("root") if roots is None else batch[GROUP].map(roots)
        batch[GROUP] = root.where(root.notna(), batch[GROUP])
        return self._hash(batch.drop(columns=["node"], errors="ignore"))

    @staticmethod
    def _to_smallest_class(batch: pd.DataFrame, smallest: dict[int, str] | None) -> pd.DataFrame:
        """CLASS becomes its group's smallest class: from ``smallest`` (broadcast) or the joined column."""
        value = batch.pop(SMALLEST) if smallest is None else batch[HASH].map(smallest)
        batch[CLASS] = value.where(value.notna(), batch[CLASS])
        return batch

    @staticmethod
    def _class_spans(table: pa.Table) -> pa.Table:
        """The groups (HASH) of ``table``'s live rows that carry several classes, with the smallest (whole groups)."""
        frame = table.to_pandas()
        classes = frame.loc[active(frame)].groupby(HASH)[CLASS].agg(["min", "max"])
        spans = classes[classes["min"] != classes["max"]]
        return pa.table(
            {HASH: pa.array(spans.index.to_numpy(), pa.int64()), SMALLEST: pa.array(spans["min"].tolist(), pa.string())}
        )

    @staticmethod
    def _histogram(batch: pd.DataFrame) -> pd.DataFrame:
        """Per class: live records per hash bucket (one row per class of the block)."""
        live = batch.loc[_free(batch), [CLASS, HASH]]
        labels, counts = [], []
        for label, hashes in live.groupby(CLASS)[HASH]:
            labels.append(label)
            counts.append(np.bincount(hashes.to_numpy() >> BUCKET_SHIFT, minlength=BUCKETS))
        return pd.DataFrame({CLASS: pd.Series(labels, dtype=object), "counts": pd.Series(counts, dtype=object)})

    @staticmethod
    def _group_counts(batch: pd.DataFrame, buckets: dict[str, list[int]]) -> pd.DataFrame:
        """Live records per (class, group hash), for the groups in ``buckets`` (class -> buckets)."""
        live = batch.loc[_free(batch), [CLASS, HASH]]
        classes, hashes = live[CLASS].to_numpy(dtype=object), live[HASH].to_numpy()
        wanted = np.zeros(len(live), dtype=bool)
        for label, cut_buckets in buckets.items():
            wanted |= (classes == label) & np.isin(hashes >> BUCKET_SHIFT, cut_buckets)
        return live[wanted].groupby([CLASS, HASH]).size().rename("n").reset_index()

    def _assign(self, batch: pd.DataFrame, thresholds: dict[str, np.ndarray]) -> pd.DataFrame:
        live, free = active(batch).to_numpy(), _free(batch).to_numpy()
        classes = batch[CLASS].to_numpy(dtype=object)
        hashes = batch[HASH].to_numpy().astype(np.uint64)
        names = np.asarray(self.names, dtype=object)
        split = np.full(len(batch), None, dtype=object)
        for label in pd.unique(classes[free]):
            rows = free & (classes == label)
            split[rows] = names[np.searchsorted(thresholds[label], hashes[rows], side="right")]
        if PLACED in batch.columns:  # in a reference's group: its split
            placed = live & ~free
            split[placed] = batch[PLACED].to_numpy(dtype=object)[placed]
        batch[SPLIT] = split
        if AUGMENTATION in batch.columns:
            self._reject_copies_outside(batch, live)
        return batch.drop(columns=HELPERS, errors="ignore")

    @staticmethod
    def _reject_copies_outside(batch: pd.DataFrame, live: np.ndarray) -> None:
        """Reject the augmented copies whose split is not one of their ``augmentation``'s ``splits``."""
        for col in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL):
            batch[col] = batch[col].astype(object).where(batch[col].notna(), None)
        for i in np.flatnonzero(live & batch[AUGMENTATION].notna().to_numpy()):
            allowed = json.loads(batch[AUGMENTATION].iat[i]).get("splits") or []
            if allowed and batch[SPLIT].iat[i] not in allowed:
                batch.iloc[i, [batch.columns.get_loc(c) for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)]] = [
                    "split",
                    "augmented_outside_splits",
                    f"split={batch[SPLIT].iat[i]} splits={','.join(allowed)}",
                ]

    # -- the dataset -------------------------------------------------------------------------------

    def driver_limit(self, ds) -> int:
        """Rows handled on the driver and broadcast (``DRIVER_LIMIT``, lowered by ``execution.broadcast_limit_rows``);
        in one task, everything (it is all in the deciding process already)."""
        return ds.held_limit(min(DRIVER_LIMIT, self.ctx.broadcast_limit_rows))

    def keys(self, batch) -> dict:
        """Map side: the grouping and stratification values of each live record."""
        wanted = [
            *self.group_fields,
            *([self.config.stratify] if self.config.stratify else []),
            AUGMENTED_FROM,
            AUGMENTATION,
        ]
        return {f: batch[f].cast(pa.string()) for f in dict.fromkeys(wanted) if f in batch.column_names}

    def decision_columns(self) -> list[str]:
        return [SPLIT]

    def decide(self, ds):
        against = bool(self.config.against)
        linked = bool(self.config.group_by) or AUGMENTED_FROM in ds.schema().names or against
        ds = ds.map_pandas(self._keys)
        if not self.config.exact and not linked:  # fixed ranges, nothing to count
            return ds.map_pandas(self._assign, self._fixed_thresholds())
        if against:
            ds = self._with_reference_rows(ds)
        partitions = max(2, ds.num_blocks())
        if linked:
            ds = self._join_components(ds, partitions)
        if against:
            ds = self._placed_by_references(ds, partitions)
        if not self.config.exact:
            return ds.map_pandas(self._assign, self._fixed_thresholds())
        if self.config.stratify and any(f in ds.schema().names for f in self.group_fields):
            ds = self._classes_of_groups(ds, partitions)
        return ds.map_pandas(self._assign, self._exact_thresholds(ds))

    # -- against: reference runs' groups -----------------------------------------------------------------

    def index_options(self) -> dict:
        return {"group_fields": self.group_fields}

    def index_columns(self) -> list[str]:
        return self.group_fields

    def index_table(self, records: pa.Table, part: int) -> pa.Table:
        """Per kept record of a split: ``id``, ``_key``, ``_split`` and its grouping values (``dup_cluster``: its
        own id where it has none)."""
        ids = records[ID].cast(pa.string())
        columns = {
            ID: ids,
            STORED: (np.int64(part) << 32) | np.arange(records.num_rows, dtype=np.int64),
            SPLIT: records[SPLIT],
        }
        for f in self.group_fields:
            values = (
                records[f].cast(pa.string()) if f in records.column_names else pa.nulls(records.num_rows, pa.string())
            )
            columns[f] = pc.coalesce(values, ids) if f == DUP_CLUSTER else values
        table = pa.table(columns)
        return table.filter(pc.is_valid(table[SPLIT]))

    def _with_reference_rows(self, ds):
        """The key rows (PLACED "") and, with negative keys, the rows of the references' index parts that carry a
        grouping value of the key rows' fields (PLACED: their split, PLACED_BY: the reference)."""
        ds = ds.map_blocks(_unplaced)
        items = []
        for position, uri in enumerate(self.config.against):
            parts = RunFolder(uri, self.ctx.storage).index_parts(type(self).name, self.index_keys())
            if parts is None:
                raise RuntimeError(f"{self.name}: {uri} has no complete index for these options")
            items += [(position, part) for part in parts]
        if not items:
            return ds
        return ds.concat(ds.map_items(_reference_rows, items, self, ds.schema()))

    def _placed_by_references(self, ds, partitions: int):
        """The key rows less the reference rows, PLACED set on those in a group with a reference row: the split of
        the group's first reference row (lowest position in ``against``, then index order). Sets
        ``metrics["placed_by_reference"]`` (records placed per reference run)."""
        places = ds.by_group(
            [HASH],
            self._group_places,
            partitions=partitions,
            rows=ds.count(),
            limit_rows=self.ctx.broadcast_limit_rows,
            columns=[HASH, KEY, PLACED, PLACED_BY],
        )
        n = places.count()
        if n <= self.driver_limit(ds):
            table = places.to_table().to_pandas() if n else None  # (an empty result may have no columns)
            found = (
                {}
                if table is None
                else dict(zip(table[HASH].tolist(), zip(table["place"].tolist(), table["place_by"].tolist())))
            )
            ds = ds.map_pandas(self._to_place, found)
        else:
            ds = ds.join(places, "left_outer", partitions, [HASH]).map_pandas(self._to_place, None)
        placed = [0] * len(self.config.against)
        for part in ds.pandas_parts(_placed_counts):
            for position, count in zip(part[PLACED_BY], part["n"]):
                placed[int(position)] += int(count)
        self.metrics = {"placed_by_reference": dict(zip(self.config.against, placed))}
        return ds

    @staticmethod
    def _group_places(table: pa.Table) -> pa.Table:
        """The groups (HASH) holding both a record and a reference row, with the first reference row's split."""
        frame = table.to_pandas()
        records = set(frame.loc[frame[KEY] >= 0, HASH].tolist())
        refs = frame[(frame[KEY] < 0) & frame[HASH].isin(records)].sort_values(
            [PLACED_BY, KEY], ascending=[True, False]
        )
        first = refs.drop_duplicates(HASH)
        return pa.table(
            {
                HASH: pa.array(first[HASH].to_numpy(), pa.int64()),
                "place": pa.array(first[PLACED].tolist(), pa.string()),
                "place_by": pa.array(first[PLACED_BY].to_numpy(), pa.int64()),
            }
        )

    @staticmethod
    def _to_place(batch: pd.DataFrame, places: dict[int, tuple[str, int]] | None) -> pd.DataFrame:
        """Reference rows dropped; PLACED and PLACED_BY from ``places`` (broadcast) or the joined columns."""
        if places is None:
            place, by = batch.pop("place").tolist(), batch.pop("place_by").tolist()
        else:
            found = [places.get(h) for h in batch[HASH].tolist()]
            place, by = [p and p[0] for p in found], [p and p[1] for p in found]
        batch[PLACED] = pd.Series([p if isinstance(p, str) else "" for p in place], index=batch.index, dtype=object)
        batch[PLACED_BY] = np.array([-1 if pd.isna(b) else int(b) for b in by], np.int64)
        return batch[batch[KEY] >= 0].reset_index(drop=True)

    def _fixed_thresholds(self) -> dict[str, np.ndarray]:
        cuts = np.cumsum(list(self.config.fractions().values()))[:-1]
        return {"": np.array([min(HASH_SPACE, round(c * HASH_SPACE)) for c in cuts], dtype=np.uint64)}

    def _join_components(self, ds, partitions: int):
        """Records linked through several grouping fields get their component's smallest value as GROUP.

        Up to ``DRIVER_LIMIT`` linking edges, the components are found on the driver (union-find) and the
        value -> root map is broadcast to the map tasks; beyond, by distributed connected components and a join.
        """

        edges = ds.select_columns([GROUP, LINKS]).map_pandas(self._edges)
        n = edges.count()
        if n == 0:
            return ds
        if n <= self.driver_limit(ds):
            table = edges.to_table()
            roots = smallest_roots(table["u"].to_pylist(), table["v"].to_pylist())
            return ds.map_pandas(self._to_root, roots)
        roots = connected_components(edges, partitions, 0)
        return ds.join(roots, "left_outer", partitions, [GROUP], ["node"]).map_pandas(self._to_root, None)

    def _classes_of_groups(self, ds, partitions: int):
        """A group whose records carry several classes counts in the smallest of them (whole groups in one task,
        or hash-partitioned beyond ``execution.broadcast_limit_rows``; the few such groups are broadcast, or joined
        when more than ``DRIVER_LIMIT``)."""
        spans = ds.by_group(
            [HASH],
            self._class_spans,
            partitions=partitions,
            rows=ds.count(),
            limit_rows=self.ctx.broadcast_limit_rows,
            columns=[HASH, CLASS, REJECT_STAGE],
        )
        n = spans.count()
        if n == 0:
            return ds
        if n <= self.driver_limit(ds):
            table = spans.to_table().to_pandas()
            smallest = dict(zip(table[HASH].tolist(), table[SMALLEST].tolist()))
            return ds.map_pandas(self._to_smallest_class, smallest)
        return ds.join(spans, "left_outer", partitions, [HASH]).map_pandas(self._to_smallest_class, None)

    def _exact_thresholds(self, ds) -> dict[str, np.ndarray]:
        """Per class, the k-1 hash values where the next split starts (see the module docstring).

        Two map passes whose partial results the driver sums: records per (class, bucket), then records per
        (class, group) inside the buckets that hold a cut.
        """
        hist: dict[str, np.ndarray] = {}
        for part in ds.pandas_parts(self._histogram):
            for label, counts in zip(part[CLASS], part["counts"]):
                hist[label] = hist.get(label, 0) + np.asarray(counts, dtype=np.int64)
        fractions = list(self.config.fractions().values())
        plan: dict[str, list[tuple]] = {}  # class -> per cut: (threshold,) or (target, bucket, records before it)
        for label, counts in hist.items():
            cum = np.concatenate([[0], np.cumsum(counts)])
            cuts = []
            for target in np.cumsum(largest_remainder(int(cum[-1]), fractions))[:-1]:
                b = int(np.searchsorted(cum, target))  # cum[b] >= target > cum[b - 1]
                if cum[b] == target:  # between buckets: bucket b is the first above the cut (empty ones too)
                    cuts.append((b << BUCKET_SHIFT if b < BUCKETS else HASH_SPACE,))
                else:
                    cuts.append((int(target), b - 1, int(cum[b - 1])))
            plan[label] = cuts
        refine: dict[str, list[int]] = {}
        for label, cuts in plan.items():
            refine.setdefault(label, []).extend(c[1] for c in cuts if len(c) == 3)
        groups: dict[tuple[str, int], pd.DataFrame] = {}
        if any(refine.values()):
            parts = ds.pandas_parts(self._group_counts, refine)
            counted = pd.concat(parts).groupby([CLASS, HASH])["n"].sum().reset_index()
            counted["bucket"] = counted[HASH].to_numpy() >> BUCKET_SHIFT
            groups = {key: rows.sort_values(HASH) for key, rows in counted.groupby([CLASS, "bucket"])}
        thresholds = {}
        for label, cuts in plan.items():
            values = []
            for cut in cuts:
                if len(cut) == 1:
                    values.append(cut[0])
                    continue
                target, bucket, before = cut
                rows = groups[(label, bucket)]
                i = nearest_boundary(rows["n"].to_numpy(), before, target)
                values.append(int(rows[HASH].iloc[i]) if i < len(rows) else (bucket + 1) << BUCKET_SHIFT)
            thresholds[label] = np.array(values, dtype=np.uint64)
        return thresholds


def _free(batch: pd.DataFrame) -> pd.Series:
    """Live rows that no reference placed (those the ratios share out)."""
    free = active(batch)
    return free & (batch[PLACED] == "") if PLACED in batch.columns else free


def _unplaced(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    return batch.append_column(PLACED, pa.array([""] * n, pa.string())).append_column(
        PLACED_BY, pa.array(np.full(n, -1, np.int64))
    )


def _reference_rows(item: tuple[int, str], stage: Split, schema: pa.Schema) -> pa.Table:
    """The rows (``schema``) of one index part of reference number ``item[0]`` that have a grouping value of the
    fields in ``schema`` (GROUP, LINKS and HASH as for records; PLACED: the record's split)."""
    position, uri = item
    fs, path = stage.ctx.storage.resolve(uri)
    index = pq.read_table(path, filesystem=fs)
    fields = [f for f in stage.group_fields if f in schema.names]
    frame = index.select([ID, STORED, SPLIT, *fields]).to_pandas()
    frame = frame[frame[fields].notna().any(axis=1) if fields else np.zeros(len(frame), bool)].reset_index(drop=True)
    frame = stage._keys(frame)
    columns = {
        KEY: reference_keys(position, frame[STORED].to_numpy()),
        PLACED: frame[SPLIT],
        PLACED_BY: np.full(len(frame), position, np.int64),
    }
    n = len(frame)
    arrays = []
    for field in schema:
        if field.name in columns:
            arrays.append(pa.array(columns[field.name], field.type))
        elif field.name in (ID, GROUP, LINKS, HASH, CLASS, *fields):
            arrays.append(pa.array(frame[field.name], field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _placed_counts(frame: pd.DataFrame) -> pd.DataFrame:
    counts = frame.loc[active(frame) & (frame[PLACED_BY] >= 0), PLACED_BY].value_counts()
    return pd.DataFrame({PLACED_BY: counts.index.to_numpy(dtype=np.int64), "n": counts.to_numpy(dtype=np.int64)})
