"""The suite's data: readers of the files under tests/data (their origins and licences are in its README.md) and
records generated from them where the test needs a layout or labels no licence-clean file has: Alpaca records and
preference pairs made from GSM8K, paraphrase pairs and revised copies of Wikipedia text with known labels.

Every generator is deterministic (fixed seeds, ``random.Random``), so a test's numbers do not change between runs.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache

from tests.conftest import data_path

# -- files ---------------------------------------------------------------------------------------------------------


def jsonl(rel: str, n: int | None = None) -> list[dict]:
    return [json.loads(line) for line in data_path(rel).read_text(encoding="utf-8").splitlines()[:n]]


def gsm8k(n: int | None = None, split: str = "train") -> list[dict]:
    """GSM8K ``{"question", "answer"}`` records: ``train`` is the first 1,500 of the train split, ``test`` the
    whole test split (1,319)."""
    return jsonl(f"examples/data/gsm8k_{split}.jsonl", n)


def c4_docs(n: int | None = None) -> list[dict]:
    """The 300 C4 documents, ``{"text"}``."""
    return jsonl("web/c4_demo.jsonl", n)


def sentences(lang: str, n: int) -> list[str]:
    """The first ``n`` sentences written for the suite in ``lang`` (tests/data/langid/<code>.txt)."""
    lines = data_path(f"langid/{lang}.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= n, f"langid/{lang}.txt has {len(lines)} sentences, the test needs {n}"
    return lines[:n]


def instructions() -> list[str]:
    """80 general instructions written for the suite (no arithmetic in them)."""
    return data_path("sft/instructions.txt").read_text(encoding="utf-8").splitlines()


@lru_cache
def wiki_articles() -> tuple[str, ...]:
    """The beginnings (about 1,300 words) of 30 English Wikipedia articles, one per line."""
    return tuple(data_path("web/wiki_demo_head.txt").read_text(encoding="utf-8").splitlines())


def wiki_sentences(article: str) -> list[str]:
    """An article cut into sentences (the dump runs paragraphs together: "socialism.Humans" is a boundary too)."""
    ends = (
        r"(?<=[a-z0-9)\"'][.!?])\s*(?=[A-Z])",  # "word. Next", "socialism.Humans", "science". The
        r"(?<=[.!?][\"'])\s*(?=[A-Z])",  # 'a "quote." Next'
        r"(?<=[A-Z]{2}[.!?])\s+(?=[A-Z][a-z])",
    )  # "on ABC. It"
    parts = re.split("|".join(ends), article)
    return [p.strip() for p in parts if p.strip()]


# -- Alpaca records and preference pairs from GSM8K ----------------------------------------------------------------


def first_step(answer: str) -> str:
    """The first line of a worked GSM8K answer without its calculator annotations (``<<2*3=6>>``)."""
    return re.sub(r"<<[^>]*>>", "", answer.split("\n")[0]).strip()


def alpaca_records(n: int | None = None) -> list[dict]:
    """Alpaca-format ``instruction/input/output`` records from the GSM8K test split: instruction = the question,
    output = the worked answer, input = "" or, for every third record, a hint (the answer's first step)."""
    return [
        {
            "instruction": r["question"],
            "input": f"Hint: {first_step(r['answer'])}" if i % 3 == 1 else "",
            "output": r["answer"],
        }
        for i, r in enumerate(gsm8k(n, "test"))
    ]


def preference_pairs() -> list[dict]:
    """The 90 preference pairs of examples/data/gsm8k_preference_pairs.json (60 GSM8K train questions in
    LLaMA-Factory's ShareGPT layout; examples/make_preference_pairs.py says how they are made)."""
    return json.loads(data_path("examples/data/gsm8k_preference_pairs.json").read_text(encoding="utf-8"))


# -- paraphrase pairs and revised copies of Wikipedia text ---------------------------------------------------------


def paraphrase_pairs(n: int) -> list[tuple[int, str, str]]:
    """``n`` labelled sentence pairs in MRPC's layout (label 1 = paraphrase, 7 in 10 as in MRPC's first 300 train
    pairs) from tests/data/paraphrase/wiki_paraphrases.jsonl, rows in order: a Wikipedia sentence with the
    paraphrase written for it (label 1), or, label 0, with the next sentence of its article (every tenth row from
    the eighth) or with a sentence written to say something else about the same subject (the ninth and tenth of
    every ten rows: other facts, reworded)."""
    rows = jsonl("paraphrase/wiki_paraphrases.jsonl", n)
    assert len(rows) == n, f"wiki_paraphrases.jsonl has {len(rows)} rows, the test needs {n}"
    kinds = ["paraphrase"] * 7 + ["next", "contradiction", "contradiction"]
    return [(int(kinds[k % 10] == "paraphrase"), row["sentence"], row[kinds[k % 10]]) for k, row in enumerate(rows)]


# meaning-preserving word substitutions (general vocabulary; one pass, so no chains)
SYNONYMS = {
    "also": "additionally",
    "although": "though",
    "among": "amongst",
    "ancient": "old",
    "approximately": "roughly",
    "area": "region",
    "areas": "regions",
    "author": "writer",
    "award": "prize",
    "awards": "prizes",
    "based": "founded",
    "because": "since",
    "became": "turned into",
    "began": "started",
    "begin": "start",
    "believed": "thought",
    "book": "volume",
    "books": "volumes",
    "called": "named",
    "children": "kids",
    "city": "town",
    "commonly": "widely",
    "community": "society",
    "considered": "regarded",
    "country": "nation",
    "created": "made",
    "described": "characterised",
    "despite": "in spite of",
    "developed": "created",
    "died": "passed away",
    "different": "distinct",
    "difficult": "hard",
    "difficulties": "problems",
    "during": "throughout",
    "each": "every",
    "early": "initial",
    "entire": "whole",
    "era": "period",
    "especially": "particularly",
    "established": "founded",
    "every": "each",
    "example": "instance",
    "examples": "instances",
    "famous": "renowned",
    "film": "movie",
    "films": "movies",
    "following": "after",
    "forms": "types",
    "found": "discovered",
    "founded": "established",
    "generally": "mostly",
    "help": "assist",
    "helped": "assisted",
    "however": "nevertheless",
    "husband": "spouse",
    "idea": "notion",
    "ideas": "notions",
    "important": "significant",
    "included": "contained",
    "includes": "contains",
    "including": "such as",
    "known": "recognised",
    "land": "territory",
    "large": "big",
    "largely": "mostly",
    "largest": "biggest",
    "later": "afterwards",
    "led": "guided",
    "life": "lifetime",
    "main": "principal",
    "mainly": "primarily",
    "major": "main",
    "many": "numerous",
    "modern": "contemporary",
    "mostly": "largely",
    "movement": "campaign",
    "nearly": "almost",
    "almost": "nearly",
    "number": "quantity",
    "often": "frequently",
    "original": "initial",
    "particularly": "especially",
    "people": "individuals",
    "period": "era",
    "philosopher": "thinker",
    "philosophers": "thinkers",
    "popular": "well-known",
    "primarily": "mainly",
    "problems": "difficulties",
    "produced": "made",
    "published": "released",
    "quickly": "rapidly",
    "rapidly": "quickly",
    "reached": "attained",
    "received": "got",
    "region": "area",
    "regarded": "considered",
    "research": "study",
    "researchers": "scientists",
    "role": "part",
    "said": "stated",
    "scholars": "academics",
    "scientists": "researchers",
    "several": "various",
    "showed": "demonstrated",
    "shown": "demonstrated",
    "shows": "demonstrates",
    "significant": "notable",
    "similar": "comparable",
    "small": "little",
    "society": "community",
    "song": "track",
    "stated": "said",
    "term": "word",
    "terms": "words",
    "throughout": "across",
    "today": "nowadays",
    "used": "employed",
    "usually": "typically",
    "various": "diverse",
    "whole": "entire",
    "wife": "spouse",
    "within": "inside",
    "work": "labour",
    "works": "pieces",
    "written": "authored",
    "wrote": "authored",
    "writer": "author",
}
WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def substitute(text: str, rate: float, rng: random.Random) -> str:
    """``text`` with each word that has a synonym replaced by it with probability ``rate`` (capitals kept)."""

    def swap(m: re.Match) -> str:
        word = m.group()
        new = SYNONYMS.get(word.lower())
        if new is None or rng.random() >= rate:
            return word
        return new[0].upper() + new[1:] if word[0].isupper() else new

    return WORD.sub(swap, text)


FRONTED = re.compile(
    r"^((?:In|During|After|Before|Although|While|When|Since|By|As|From|With|On|At|For|Following|"
    r"Despite|Unlike|Like|Under|Throughout)\b[^,]{3,80}), (.+?)([.!?])$"
)
MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"


def move_front_phrase(sentence: str) -> str:
    """``In 1990, the town grew.`` -> ``The town grew in 1990.`` (unchanged without such a phrase)."""
    m = FRONTED.match(sentence)
    if not m:
        return sentence
    lead, rest, end = m.groups()
    return f"{rest[0].upper()}{rest[1:]} {lead[0].lower()}{lead[1:]}{end}"


def reword(sentence: str, rng: random.Random) -> str:
    """A heavy rewording that keeps the meaning: bracketed asides dropped, ``the capital of Texas`` -> ``Texas's
    capital``, ``April 29, 1970`` -> ``29 April 1970``, ``, which``/``, who`` -> ``, that``, nearly every word of
    ``SYNONYMS`` swapped, a fronted phrase moved to the end."""
    text = re.sub(r"\s*\([^()]*\)", "", sentence)
    text = re.sub(r"\bthe (\w+) of ([A-Z][a-z]+)\b(?! [A-Z])", lambda m: f"{m[2]}'s {m[1]}", text)
    text = re.sub(rf"\b({MONTHS}) (\d{{1,2}}), (\d{{4}})", r"\2 \1 \3", text)
    text = re.sub(r", (?:which|who) ", ", that ", text)
    text = substitute(text, 0.9, rng)
    return move_front_phrase(text[0].upper() + text[1:])


# source articles of the revision corpus: long ones on five distinct subjects
REVISION_SOURCES = (0, 1, 4, 6, 7)


def revision_corpus(seed: int = 0) -> list[tuple[str, str, str]]:
    """95 (answer, source, label) rows in the layout of the Clough & Stevenson corpus: five source passages (the
    first 300 or so words of five Wikipedia articles) and answers written from them, label 3 = cut and paste (a
    run of the source's sentences, verbatim), 2 = light revision (such a run with a few words swapped for synonyms
    and a sentence dropped or two swapped), 1 = heavy revision (every sentence reworded, see ``reword``, and the
    sentences reordered), 0 = independent (a passage of the same article that does not
    overlap the source). 19 answers of each revision label, 38 independent ones."""
    rng = random.Random(seed)
    sources, rests = [], []
    for index in REVISION_SOURCES:
        sents = wiki_sentences(wiki_articles()[index])
        cut = next(k for k in range(1, len(sents)) if len(" ".join(sents[:k]).split()) >= 300)
        sources.append(sents[:cut])
        rests.append(sents[cut:])
    labels = ["0"] * 38 + ["1"] * 19 + ["2"] * 19 + ["3"] * 19
    rng.shuffle(labels)
    rows = []
    for i, label in enumerate(labels):
        k = i % len(sources)
        source = sources[k]
        if label == "0":
            rest = rests[k]
            start = rng.randrange(0, len(rest) - 6)
            answer = rest[start : start + rng.randint(5, 12)]
        else:
            length = rng.randint(max(3, len(source) // 2), len(source) - 1)  # never the whole source
            start = rng.randrange(0, len(source) - length + 1)
            answer = list(source[start : start + length])
            if label == "2":
                answer = [substitute(s, 0.15, rng) for s in answer]
                j = rng.randrange(len(answer) - 1)
                if rng.random() < 0.5:
                    del answer[j]
                else:
                    answer[j], answer[j + 1] = answer[j + 1], answer[j]
            elif label == "1":
                answer = [reword(s, rng) for s in answer]
                rng.shuffle(answer)
        rows.append((" ".join(answer), " ".join(source), label))
    return rows
