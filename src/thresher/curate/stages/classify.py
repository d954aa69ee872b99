"""``classify``: a model's score per record in ``<name>_score`` (or ``column``), optionally a filter on it.

Three kinds of classifier (``method``):

* ``linear``: a logistic-regression head (scikit-learn) on sentence embeddings. ``train: {positive: [...],
  negative: [...]}`` names files of user-labelled examples (``.jsonl``: the ``text`` field of each line; other
  files: one example per line); the head is trained on the driver when the run starts, on the embeddings of
  ``model`` (``thresher.models.encoders``), with ``test_fraction`` of each class held out (stratified, seeded) for its
  metrics (accuracy, ROC AUC), then refitted on all examples and saved as JSON under the cache
  (``THRESHER_CACHE``/``classifiers/<head>.json``: weights, the encoder it needs, the examples' digest, metrics).
  A later config names it with ``head`` alone and reuses it; with ``train`` it is trained again only when the
  examples, model or options changed. Records are scored on the ``embedding`` column when an ``embed`` stage
  (with the same model) added it, else encoded here. The score is the head's probability of ``positive``.
* ``hf``: a local Hugging Face sequence-classification folder (``model``); the score is the softmax probability
  of ``label`` (a label name from its config, or an index; default: the last label).
* ``wordlist``: per-language files of words or phrases (``words: {en: path, de: path, "*": path}``; one entry per
  line, ``#`` comments), matched case-insensitively as whole words: the text is cut into words once and each run
  of up to the longest phrase's length is looked up in a set, so the cost is linear in the text. The list is the
  one of the record's ``lang_field`` (from ``langid``), else ``"*"``; records with neither score 0. The score is
  the number of matches (``max_score: 0`` drops any record with a listed word); the detail names the first ones.

Records scored below ``min_score`` or above ``max_score`` are rejected with reason ``classify:<name>`` and the
score in the detail (``min_score`` above ``max_score`` is a config error). Empty texts are scored like any other
text. ``augment``'s label check uses the same classifiers (:meth:`Classify.predict`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from thresher.core.config import ConfigError, StrictModel
from thresher.curate.stage import MapStage, StageConfig, reject
from thresher.models.encoders import require_torch
from thresher.models.resolve import cache_dir, resolve_model

_WORD = re.compile(r"\w+(?:['’]\w+)*")
MAX_CHARS = 2000  # characters of a text the linear head's encoder and the hf model see
MATCHES_SHOWN = 5


class TrainOptions(StrictModel):
    positive: list[str] = Field(min_length=1, description="files of positive examples")
    negative: list[str] = Field(min_length=1, description="files of negative examples")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of each class held out for the metrics")
    c: float = Field(1.0, gt=0, description="inverse regularization strength (LogisticRegression C)")
    seed: int = Field(0, description="seed of the held-out split")


class ClassifyConfig(StageConfig):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the classifier's name (reason classify:<name>)")
    method: Literal["linear", "hf", "wordlist"] = Field(description="the kind of classifier (above)")
    column: str | None = Field(None, description="score column (default: <name>_score)")
    min_score: float | None = Field(None, description="reject records scored below")
    max_score: float | None = Field(None, description="reject records scored above")
    head: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="linear: the saved head's name")
    train: TrainOptions | None = Field(None, description="linear: labelled examples to (re)train the head on")
    model: str | None = Field(
        None, description=("linear: the encoder (default pkg:all_minilm_l6_v2); hf: the sequence-classification folder")
    )
    embedding_column: str = Field("embedding", description="linear: embeddings an embed stage added")
    label: str | int | None = Field(None, description="hf: the label whose probability is the score")
    words: dict[str, str] | None = Field(None, description="wordlist: language code (or *) -> file")
    lang_field: str = Field("lang", description="wordlist: the column naming each record's language")
    batch_size: int = Field(32, ge=1, description="linear, hf: texts per forward pass")
    num_gpus: float = Field(
        0.0,
        ge=0,
        description="linear, hf: GPUs per actor (e.g. 1, or 0.25 to share one); the "
        "model runs on the GPU Ray gives the actor",
    )

    @model_validator(mode="after")
    def _options_fit_method(self):
        given = {k for k in ("head", "train", "model", "label", "words") if getattr(self, k) is not None}
        allowed = {"linear": {"head", "train", "model"}, "hf": {"model", "label"}, "wordlist": {"words"}}[self.method]
        if given - allowed:
            raise ValueError(f"{', '.join(sorted(given - allowed))}: not an option of method {self.method}")
        if self.method == "linear" and not self.head:
            raise ValueError("head: the linear head's name is required")
        if self.method == "hf" and not self.model:
            raise ValueError("model: the hf method needs a model folder")
        if self.method == "wordlist" and not self.words:
            raise ValueError("words: the wordlist method needs at least one list")
        return self

    @model_validator(mode="after")
    def _score_range(self):
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise ValueError(
                f"min_score: {self.min_score:g} is above max_score {self.max_score:g} (every record rejected)"
            )
        return self


class Classify(MapStage):
    name = "classify"
    Config = ClassifyConfig
    stateful = True

    def __init__(self, config: ClassifyConfig, ctx, key: str | None = None):
        """``key``: the config key that errors name (default ``classify.<name>``)."""
        super().__init__(config, ctx)
        c = config
        key = key or f"classify.{c.name}"
        self.num_gpus = c.num_gpus
        self.column = c.column or f"{c.name}_score"
        self.head: dict | None = None
        self.lists: dict[str, WordList] = {}
        if c.method != "wordlist":
            require_torch(key)
        if c.method == "linear":
            self.head = (
                trained_head(c.head, c.model or "pkg:all_minilm_l6_v2", c.train) if c.train else load_head(c.head)
            )
            self.folder = resolve_model(self.head["model"], f"{key}.model")
        elif c.method == "hf":
            self.folder = resolve_model(c.model, f"{key}.model")
            config_file = Path(self.folder, "config.json")
            if not config_file.is_file():
                raise ConfigError(f"{key}.model: {self.folder} is not a model folder (no config.json)")
            self.labels = label_names(json.loads(config_file.read_text()))
            self.label_index = label_index(self.labels, c.label, f"{key}.label")
        else:
            self.lists = {lang: WordList.read(path, f"{key}.words.{lang}") for lang, path in c.words.items()}
        self.model = None

    def added_columns(self) -> dict[str, str]:
        return {self.column: f"score of classifier {self.config.name} ({self.config.method})"}

    def fingerprint(self) -> str | None:
        """The head's weights or the word lists: a retrained head or edited list is a different run."""
        if self.head is not None:
            return self.head["digest"]
        if self.lists:
            return hashlib.sha256(
                json.dumps({k: sorted(v.phrases) for k, v in self.lists.items()}).encode()
            ).hexdigest()
        return None

    def setup(self) -> None:
        import torch

        torch.set_num_threads(1)
        if self.config.method == "hf":
            self.model = SequenceClassifier(self.folder, self.label_index, self.config.batch_size)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        c = self.config
        texts = [t if isinstance(t, str) else "" for t in batch[self.text]]
        langs = batch[c.lang_field].tolist() if c.lang_field in batch.columns else None
        vectors = None
        if c.method == "linear" and c.embedding_column in batch.columns and batch[c.embedding_column].notna().all():
            vectors = np.stack([np.asarray(v, np.float32) for v in batch[c.embedding_column]])
        scores, found = self.scores(texts, langs, vectors)
        batch[self.column] = scores
        text = f"{c.name} score=" + batch[self.column].map("{:.4g}".format)
        if found is not None:
            text = text + pd.Series(
                [" words=" + ",".join(f[:MATCHES_SHOWN]) if f else "" for f in found], index=batch.index
            )
        reason = f"classify:{c.name}"
        if c.min_score is not None:
            reject(batch, batch[self.column] < c.min_score, reason, text + f" < min_score {c.min_score:g}")
        if c.max_score is not None:
            reject(batch, batch[self.column] > c.max_score, reason, text + f" > max_score {c.max_score:g}")
        return batch

    def scores(
        self, texts: list[str], langs: list | None = None, vectors: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[list[str]] | None]:
        """Each text's score, and for word lists the words found in each. ``langs``: the texts' languages (word
        lists); ``vectors``: their embeddings (linear heads; encoded here when None)."""
        c = self.config
        if c.method == "hf":
            return self.model.scores([t[:MAX_CHARS] for t in texts]), None
        if c.method == "wordlist":
            found = [self.word_list(lang).matches(t) for t, lang in zip(texts, langs or [None] * len(texts))]
            return np.array([len(f) for f in found], float), found
        if vectors is None:
            vectors = self.encoder().encode([t[:MAX_CHARS] for t in texts])
        if vectors.shape[1] != len(self.head["coef"]):
            raise ValueError(
                f"classify {c.name}: embeddings of {vectors.shape[1]} dimensions for a head "
                f"trained on {len(self.head['coef'])} (model {self.head['model']})"
            )
        return head_scores(self.head, vectors), None

    def predict(
        self,
        texts: list[str],
        langs: list | None = None,
        threshold: float | None = None,
        names: tuple[str, str] = ("negative", "positive"),
    ) -> list[str]:
        """Each text's label: the hf model's most probable label (named as its config names it); for a linear head
        or a word list ``names[1]`` where the score is at least ``threshold`` (default 0.5 and 1), else
        ``names[0]``."""
        if self.config.method == "hf":
            probabilities = self.model.probabilities([t[:MAX_CHARS] for t in texts])
            return [self.labels[i] for i in probabilities.argmax(axis=1)]
        scores, _ = self.scores(texts, langs)
        if threshold is None:
            threshold = 0.5 if self.config.method == "linear" else 1
        return [names[int(s >= threshold)] for s in scores]

    def encoder(self):
        """The linear head's sentence encoder, loaded on first use (never when the records bring embeddings)."""
        if self.model is None:
            from thresher.models.encoders import SentenceEncoder

            self.model = SentenceEncoder(self.folder, batch_size=self.config.batch_size)
        return self.model

    def word_list(self, lang) -> WordList:
        return self.lists.get(lang) if isinstance(lang, str) and lang in self.lists else self.lists.get("*", EMPTY_LIST)


# -- linear heads ----------------------------------------------------------------------------------------------


def head_path(name: str) -> Path:
    return cache_dir() / "classifiers" / f"{name}.json"


def load_head(name: str) -> dict:
    path = head_path(name)
    if not path.is_file():
        raise ConfigError(f"classify.head: no saved head {name!r} ({path}); give train: {{positive, negative}} once")
    return json.loads(path.read_text())


def read_examples(paths: list[str], key: str) -> list[str]:
    """Texts of example files: ``.jsonl`` lines' ``text``, else one example per non-empty line."""
    texts = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise ConfigError(f"{key}: {p} is not a file")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":  # JSON Lines end at "\n" only (str.splitlines splits at U+2028 too)
            texts += [json.loads(line)["text"] for line in text.split("\n") if line.strip()]
        else:
            texts += [line for line in text.splitlines() if line.strip()]
    return texts


def head_scores(head: dict, vectors: np.ndarray) -> np.ndarray:
    """The head's probability of the positive class for each row of ``vectors``."""
    logits = vectors.astype(np.float64) @ np.asarray(head["coef"]) + head["intercept"]
    return 1 / (1 + np.exp(-logits))


def trained_head(name: str, model: str, train: TrainOptions) -> dict:
    """The head ``name`` trained on ``train``'s examples with ``model``'s embeddings, reused from the cache when
    it was trained on the same examples, model and options; saved with its held-out metrics."""
    positive = read_examples(train.positive, "classify.train.positive")
    negative = read_examples(train.negative, "classify.train.negative")
    if len(positive) < 2 or len(negative) < 2:
        raise ConfigError("classify.train: at least 2 positive and 2 negative examples are needed")
    source = hashlib.sha256(
        json.dumps([model, train.model_dump(exclude={"positive", "negative"}), positive, negative]).encode()
    ).hexdigest()
    path = head_path(name)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("source") == source:
            return saved
    from thresher.models.encoders import SentenceEncoder

    encoder = SentenceEncoder(resolve_model(model, "classify.model"))
    vectors = encoder.encode([t[:MAX_CHARS] for t in positive + negative])
    labels = np.r_[np.ones(len(positive), int), np.zeros(len(negative), int)]
    head = fit_head(vectors, labels, train)
    head.update(name=name, model=model, source=source, examples={"positive": len(positive), "negative": len(negative)})
    head["digest"] = hashlib.sha256(json.dumps([head["coef"], head["intercept"], model]).encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(head))
    scratch.replace(path)
    return head


def fit_head(vectors: np.ndarray, labels: np.ndarray, train: TrainOptions) -> dict:
    """Held-out accuracy and ROC AUC of a logistic regression, then its weights refitted on every example."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    fit_rows, test_rows = train_test_split(
        np.arange(len(labels)), test_size=train.test_fraction, stratify=labels, random_state=train.seed
    )
    held_out = LogisticRegression(C=train.c, max_iter=1000).fit(vectors[fit_rows], labels[fit_rows])
    proba = held_out.predict_proba(vectors[test_rows])[:, 1]
    metrics = {
        "held_out": len(test_rows),
        "accuracy": float(accuracy_score(labels[test_rows], proba >= 0.5)),
        "auc": float(roc_auc_score(labels[test_rows], proba)) if len(set(labels[test_rows])) == 2 else None,
    }
    final = LogisticRegression(C=train.c, max_iter=1000).fit(vectors, labels)
    return {"coef": final.coef_[0].tolist(), "intercept": float(final.intercept_[0]), "metrics": metrics}


# -- hf sequence classifiers ------------------------------------------------------------------------------------


def label_names(config: dict) -> list[str]:
    """The labels of a sequence-classification model config, by index (``id2label``; ``LABEL_<i>`` without)."""
    id2label = {int(k): v for k, v in config.get("id2label", {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(len(id2label) or int(config.get("num_labels", 2)))]


def label_index(names: list[str], label: str | int | None, key: str) -> int:
    """The index of ``label`` (one of ``names``, or an index; None: the last label)."""
    if label is None:
        return len(names) - 1
    if isinstance(label, int) and 0 <= label < len(names):
        return label
    if label in names:
        return names.index(label)
    raise ConfigError(f"{key}: {label!r} is not a label of the model (labels: {sorted(names)})")


class SequenceClassifier:
    """A local sequence-classification folder: the probability of label ``index`` per text."""

    def __init__(self, folder: str, index: int, batch_size: int):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).to(self.device).eval()
        self.index = index
        self.batch_size = batch_size

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """The softmax over the labels, one row per text."""
        import torch

        out = np.zeros((len(texts), self.model.config.num_labels))
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=512,
                    return_tensors="pt",
                ).to(self.device)
                probs = torch.softmax(self.model(**tokens).logits.float(), dim=-1)
                out[start : start + len(probs)] = probs.cpu().numpy()
        return out

    def scores(self, texts: list[str]) -> np.ndarray:
        """The probability of label ``index`` per text."""
        return self.probabilities(texts)[:, self.index]


# -- word lists -------------------------------------------------------------------------------------------------


class WordList:
    """Words and phrases (casefolded word tuples) matched as whole words, in time linear in the text."""

    def __init__(self, phrases: set[tuple[str, ...]]):
        self.phrases = {" ".join(p) for p in phrases}
        self.longest = max((len(p) for p in phrases), default=0)

    @classmethod
    def read(cls, path: str, key: str) -> WordList:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"{key}: {path} is not a file")
        phrases = set()
        for line in p.read_text(encoding="utf-8").splitlines():
            words = tuple(w.casefold() for w in _WORD.findall(line.split("#", 1)[0]))
            if words:
                phrases.add(words)
        return cls(phrases)

    def matches(self, text: str) -> list[str]:
        """The listed words and phrases in ``text``, in order of occurrence (repeats included)."""
        if not self.longest:
            return []
        words = [w.casefold() for w in _WORD.findall(text)]
        found = []
        for i in range(len(words)):
            for n in range(1, min(self.longest, len(words) - i) + 1):
                phrase = " ".join(words[i : i + n])
                if phrase in self.phrases:
                    found.append(phrase)
        return found


EMPTY_LIST = WordList(set())
