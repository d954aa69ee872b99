"""normalize and pii on real text: behaviour of each option, validators, linear time on adversarial input."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from pipelines.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext, run_map_stage
from pipelines.stages.normalize import Normalize, NormalizeConfig
from pipelines.stages.pii import Pii, PiiConfig, iban_ok, luhn_ok
from tests.conftest import shared_path


def batch(texts) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame({"id": [str(i) for i in range(n)], "text": texts, REJECT_STAGE: [None] * n,
                         REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n})


def c4_texts(n=50) -> list[str]:
    return [json.loads(l)["text"] for l in shared_path("web/c4_demo.jsonl").read_text().splitlines()[:n]]


def normalize(texts, **opts) -> pd.DataFrame:
    return run_map_stage(Normalize(NormalizeConfig(**opts), StageContext()), batch(texts))


def test_normalize_repairs_mojibake_controls_and_whitespace():
    out = normalize(["The cafÃ© donâ€™t close\x00 early.\r\n\r\n\r\n\r\nNext\u00a0\u00a0 line\t\t here.   \n\x0b\u200bend"])
    assert out["text"][0] == "The café don’t close early.\n\nNext line here.\nend"


def test_normalize_unicode_forms_and_html():
    assert normalize(["ﬁne ①"], unicode_form="NFKC")["text"][0] == "fine 1"
    assert normalize(["ﬁne ①"], unicode_form="NFC", fix_mojibake=False)["text"][0] == "ﬁne ①"
    assert normalize(["e\u0301"])["text"][0] == "\u00e9"
    html = "<html><head><title>t</title><script>var x=1;</script></head><body><p>Hello <b>world</b>.</p><div>Second block</div></body></html>"
    text = normalize([html], html_to_text=True)["text"][0]
    assert "var x" not in text and "Hello" in text and "Second block" in text and "<" not in text


def test_normalize_keeps_real_text_and_rejects_what_becomes_empty():
    texts = c4_texts()
    out = normalize(texts + ["\x00\x01 \u200b \t"])
    assert out[REJECT_REASON].tolist()[-1] == "empty_after_normalize"
    assert out[REJECT_STAGE].tolist()[-1] == "normalize"
    assert out[REJECT_STAGE][:-1].isna().all()
    # real web text is mostly unchanged: same words
    for before, after in zip(texts, out["text"][:-1]):
        assert before.split() == after.split() or abs(len(before) - len(after)) < 0.05 * len(before)


def pii(texts, **opts) -> tuple[pd.DataFrame, Pii]:
    stage = Pii(PiiConfig(**opts), StageContext())
    return run_map_stage(stage, batch(texts)), stage


PLANTED = {
    "email": ("jane.doe+news@mail.example.co.uk", "[EMAIL]"),
    "phone": ("+1 (415) 555-0132", "[PHONE]"),
    "ipv4": ("192.168.10.254", "[IP_ADDRESS]"),
    "ipv6": ("2001:db8:85a3::8a2e:370:7334", "[IP_ADDRESS]"),
    "ssn": ("123-45-6789", "[SSN]"),
    "credit_card": ("4111 1111 1111 1111", "[CREDIT_CARD]"),
    "iban": ("DE89 3704 0044 0532 0130 00", "[IBAN]"),
}


def test_pii_redacts_each_type_planted_in_real_text():
    texts = c4_texts(len(PLANTED))
    planted = [f"{t[:300]} Contact: {value}. {t[300:600]}" for t, (value, _) in zip(texts, PLANTED.values())]
    out, _ = pii(planted)
    for text, (kind, (value, token)) in zip(out["text"], PLANTED.items()):
        assert value not in text, kind
        assert token in text, kind
        assert out[f"_metric.pii.{kind}"][list(PLANTED).index(kind)] >= 1


def test_pii_validators_avoid_false_positives():
    negatives = [
        "Card 4111 1111 1111 1112 fails the Luhn check.",
        "Order number 1234567890123 is not a card.",
        "SSN-like 000-12-3456 and 666-12-3456 and 900-12-3456 are never issued.",
        "Version 1.2.3.4.5 and 999.1.1.1 are not addresses.",
        "At 12:30:45 we met; see ratio 3:2.",
        "IBAN DE89 3704 0044 0532 0130 01 has a bad check digit.",
    ]
    out, _ = pii(negatives)
    assert out["text"].tolist() == negatives
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_pii_modes_mask_and_hash_and_type_selection():
    text = "Write to ann@example.org or call +44 20 7946 0958."
    masked, _ = pii([text], mode="mask")
    assert "***@*******.***" in masked["text"][0] and "+** ** **** ****" in masked["text"][0]
    hashed, _ = pii([text, text], mode="hash", salt="s3cret")
    a, b = hashed["text"]
    assert a == b and "[EMAIL:" in a and "ann@example.org" not in a
    other_salt, _ = pii([text], mode="hash", salt="other")
    assert other_salt["text"][0] != a
    only_email, _ = pii([text], types=["email"])
    assert "[EMAIL]" in only_email["text"][0] and "+44 20 7946 0958" in only_email["text"][0]


@pytest.mark.parametrize("adversarial", [
    "a" * 1_000_000,
    "a." * 500_000,
    "1-" * 500_000,
    "1 " * 500_000,
    ":" * 1_000_000,
    "a@" * 500_000,
    "1." * 500_000,
    "\n \t" * 333_333,
])
def test_text_stages_are_linear_time_on_adversarial_input(adversarial):
    for run in (lambda: normalize([adversarial]), lambda: pii([adversarial])):
        t0 = time.process_time()  # CPU time: the work done, whatever else shares the machine
        run()
        assert time.process_time() - t0 < 1.0
