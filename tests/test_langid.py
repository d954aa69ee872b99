"""langid: accuracy on sentences written for the suite (tests/data/langid), label mapping (nb/no, GlotLID),
keep/min_score/unknown, what the model sees of long documents, model_path (local and s3://), fields (joined texts, chat
messages)."""

from __future__ import annotations

import boto3
import orjson
import pytest

from testkit.batches import batch
from tests.samples import sentences as written
from tests.test_text_stages import frame
from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.curate.filters.languages import from_model_label, normalize_code
from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, StageContext, run_map_stage
from thresher.curate.stages.langid import Langid, LangidConfig, bundled_model_path, model_input

MAJOR = ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "zh", "ja", "ar", "pl", "tr", "sv", "ko", "hi")


def langid(**opts) -> Langid:
    stage = Langid(LangidConfig(**opts), StageContext())
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def default():
    return langid()


def sentences(lang: str, n: int = 100) -> list[str]:
    return written(lang, n)


def test_accuracy_on_labelled_sentences_of_major_languages(default):
    for lang in MAJOR:
        out = run_map_stage(default, batch(sentences(lang)))
        accuracy = (out["lang"] == lang).mean()
        assert accuracy > 0.9, (lang, accuracy, out["lang"].value_counts().head(3).to_dict())
        assert out["lang_score"].between(0, 1).all() and out[REJECT_REASON].isna().all()


def test_norwegian_bokmal_is_nb_unless_the_label_map_is_cleared(default):
    texts = sentences("nb")
    langs, _ = default.identify(texts)
    assert "no" not in langs and langs.count("nb") > 0.7 * len(texts)
    raw, _ = langid(label_map={}).identify(texts)
    assert "nb" not in raw and raw.count("no") == langs.count("nb")


def test_label_and_code_mapping():
    assert [
        from_model_label(l)
        for l in (
            "__label__de",
            "__label__eng_Latn",
            "__label__cmn_Hani",
            "__label__nob_Latn",
            "__label__arb_Arab",
            "__label__zxx_Zxxx",
            "__label__ceb",
            "__label__yue_Hani",
            "__label__als",
        )
    ] == ["de", "en", "zh", "nb", "ar", "und", "ceb", "yue", "als"]
    assert [normalize_code(c) for c in ("EN", "eng", "zh-Hans", "nob", "pt_BR", "ceb")] == [
        "en",
        "en",
        "zh",
        "nb",
        "pt",
        "ceb",
    ]
    stage = Langid(LangidConfig(keep=["no", "ENG"]), StageContext())
    assert stage.keep == {"nb", "en"}


def test_keep_min_score_unknown_reasons_and_details():
    stage = langid(keep=["en", "no"], min_score=0.5, drop_unknown=True)
    texts = [
        "The weather was lovely and we walked along the river all afternoon.",
        "Der Zug fährt jeden Morgen um acht Uhr vom Hauptbahnhof ab.",
        "12345 !!! 678 --- 2024",
        "Jeg liker å gå tur i skogen om høsten når bladene skifter farge og lufta er klar.",
    ]
    out = run_map_stage(stage, batch(texts))
    assert out[REJECT_REASON].tolist() == [None, "lang_not_kept", "lang_unknown", None]
    assert out["lang"].tolist() == ["en", "de", "und", "nb"] and out["lang_score"][2] == 0.0
    assert out[REJECT_DETAIL][1].startswith("lang=de score=0.9") and out[REJECT_DETAIL][1].endswith(
        " not in keep: en, nb"
    )
    low = run_map_stage(langid(min_score=0.99), batch(["ok fine", texts[0]]))
    assert low[REJECT_REASON][0] == "lang_score_below_min" and "< 0.99" in low[REJECT_DETAIL][0]
    kept_all = run_map_stage(langid(), batch(texts))
    assert kept_all[REJECT_REASON].isna().all() and kept_all["lang"][2] == "und"


def test_model_input_one_line_windows_and_case(default):
    assert model_input("Line one\nline two", 100) == "Line one line two"
    assert model_input("SHOUTED HEADLINE TEXT", 100) == "shouted headline text"
    long = "start " * 300 + "middle " * 300 + "end " * 300
    seen = model_input(long, 300)
    assert len(seen) <= 300 and seen.split()[0] == "start" and "middle" in seen and seen.split()[-1] == "end"
    assert all(w in ("start", "middle", "end") for w in seen.split())  # cut at spaces: no partial words
    assert len(model_input("字" * 5000, 300)) <= 302  # three windows and two joining spaces
    # an English page whose German navigation header alone would mislead the model
    page = "Startseite Impressum Kontakt Datenschutz Warenkorb Anmelden\n" + (
        "This long document is written in plain English about gardens, rivers and the people who live there. " * 60
    )
    langs, scores = default.identify([page])
    assert langs == ["en"] and scores[0] > 0.8


def test_model_path_local_missing_and_s3(tmp_path, s3_bucket):
    with pytest.raises(ConfigError, match="model_path"):
        Langid(LangidConfig(model_path=str(tmp_path / "missing.bin")), StageContext())
    local = langid(model_path=str(bundled_model_path()))
    assert local.identify(["Das ist ein ganz normaler deutscher Satz."])[0] == ["de"]
    boto3.client("s3").upload_file(str(bundled_model_path()), s3_bucket, "models/lid.176.ftz")
    uri = f"s3://{s3_bucket}/models/lid.176.ftz"
    remote = Langid(LangidConfig(model_path=uri), StageContext(storage=Storage.from_options(None)))
    remote.setup()
    assert remote.identify(["Ceci est une phrase tout à fait ordinaire en français."])[0] == ["fr"]
    with pytest.raises(ConfigError, match="not found"):
        Langid(
            LangidConfig(model_path=f"s3://{s3_bucket}/models/none.bin"),
            StageContext(storage=Storage.from_options(None)),
        )


def test_fields_decide_one_language_on_their_joined_texts():
    english = "The weather was lovely and we walked along the river all afternoon."
    german = ["Der Zug fährt jeden Morgen um acht Uhr ab.", "Wir besuchen danach unsere Freunde in Berlin."]
    french = [
        {"role": "user", "content": "Bonjour, pouvez-vous m'aider à écrire une lettre ?"},
        {"role": "assistant", "content": "Bien sûr, voici une lettre polie pour votre voisin."},
    ]
    b = frame(
        text=[english, english],
        title=[german[0], "Ok"],
        body=[german[1], None],
        messages=[None, orjson.dumps(french).decode()],
    )
    by_title_body = run_map_stage(langid(fields=["title", "body"], keep=["de"]), b.copy())
    assert by_title_body["lang"].tolist() == ["de", "en"]  # "Ok" alone reads as English
    assert by_title_body[REJECT_REASON].tolist() == [None, "lang_not_kept"]
    by_chat = run_map_stage(langid(fields=["messages"]), b.copy())
    assert by_chat["lang"].tolist() == ["und", "fr"]  # no text at all: und
    assert run_map_stage(langid(), b.copy())["lang"].tolist() == ["en", "en"]  # default: the text field
    typo = run_map_stage(langid(fields=["titel"]), b.copy())
    assert typo[REJECT_REASON].tolist() == ["missing_field"] * 2 and "'titel'" in typo[REJECT_DETAIL][0]
