"""Language codes: model labels to the ISO 639-1 codes that ``lang`` holds, and languages written without spaces.

``lang`` is an ISO 639-1 code where the language has one and the model's own (ISO 639-3 or Wikipedia) code
otherwise (``ceb``, ``yue``, ``sh``); ``und`` when a text has no letters to identify.

* fastText lid.176 labels are Wikipedia language codes, ISO 639-1 for all but a few; they stay as they are (its
  three-letter ``als`` is Alemannic, not ISO's Tosk Albanian). Its ``no`` was trained on the Norwegian
  Wikipedia, which is written in Bokmål (Nynorsk has its own label, ``nn``): the ``langid`` stage's default
  ``label_map`` renames it ``nb`` (:data:`DEFAULT_LABEL_MAP`).
* GlotLID labels are ISO 639-3 code plus script (``eng_Latn``); the script is dropped and the code mapped to
  ISO 639-1, individual languages of a macrolanguage to the macrolanguage's code (``cmn`` -> ``zh``, ``arb``
  -> ``ar``, ``nob`` -> ``nb``, ``zsm`` -> ``ms``). ``und_*`` and ``zxx_*`` (no linguistic content) become ``und``.
"""

from __future__ import annotations

UNKNOWN = "und"
DEFAULT_LABEL_MAP = {"no": "nb"}

# ISO 639-1 -> ISO 639-3 (639-2/T for macrolanguages), all 183 current codes plus ``sh``.
_ISO_639_1 = (
    "aa aar ab abk ae ave af afr ak aka am amh an arg ar ara as asm av ava ay aym az aze ba bak be bel bg bul "
    "bi bis bm bam bn ben bo bod br bre bs bos ca cat ce che ch cha co cos cr cre cs ces cu chu cv chv cy cym "
    "da dan de deu dv div dz dzo ee ewe el ell en eng eo epo es spa et est eu eus fa fas ff ful fi fin fj fij "
    "fo fao fr fra fy fry ga gle gd gla gl glg gn grn gu guj gv glv ha hau he heb hi hin ho hmo hr hrv ht hat "
    "hu hun hy hye hz her ia ina id ind ie ile ig ibo ii iii ik ipk io ido is isl it ita iu iku ja jpn jv jav "
    "ka kat kg kon ki kik kj kua kk kaz kl kal km khm kn kan ko kor kr kau ks kas ku kur kv kom kw cor ky kir "
    "la lat lb ltz lg lug li lim ln lin lo lao lt lit lu lub lv lav mg mlg mh mah mi mri mk mkd ml mal mn mon "
    "mr mar ms msa mt mlt my mya na nau nb nob nd nde ne nep ng ndo nl nld nn nno no nor nr nbl nv nav ny nya "
    "oc oci oj oji om orm or ori os oss pa pan pi pli pl pol ps pus pt por qu que rm roh rn run ro ron ru rus "
    "rw kin sa san sc srd sd snd se sme sg sag sh hbs si sin sk slk sl slv sm smo sn sna so som sq sqi sr srp "
    "ss ssw st sot su sun sv swe sw swa ta tam te tel tg tgk th tha ti tir tk tuk tl tgl tn tsn to ton tr tur "
    "ts tso tt tat tw twi ty tah ug uig uk ukr ur urd uz uzb ve ven vi vie vo vol wa wln wo wol xh xho yi yid "
    "yo yor za zha zh zho zu zul"
).split()
ISO3_TO_ISO1 = {_ISO_639_1[i + 1]: _ISO_639_1[i] for i in range(0, len(_ISO_639_1), 2)}
# Individual languages that GlotLID labels in place of their macrolanguage.
MACRO_MEMBERS = {
    "arb": "ar",
    "cmn": "zh",
    "zsm": "ms",
    "pes": "fa",
    "prs": "fa",
    "ekk": "et",
    "lvs": "lv",
    "swh": "sw",
    "uzn": "uz",
    "uzs": "uz",
    "azj": "az",
    "khk": "mn",
    "npi": "ne",
    "ory": "or",
    "plt": "mg",
    "gaz": "om",
    "hae": "om",
    "quy": "qu",
    "quz": "qu",
    "ydd": "yi",
    "pbt": "ps",
    "pst": "ps",
    "als": "sq",
    "kmr": "ku",
    "gug": "gn",
    "kpv": "kv",
    "ayr": "ay",
    "fil": "tl",
    "twi": "tw",
}

# Scripts written without spaces between words: rules that count whitespace-delimited words do not apply.
NO_SPACE_LANGS = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "dz", "yue", "wuu", "gan", "hak", "nan"})


def from_model_label(label: str) -> str:
    """``__label__de`` -> ``de``, ``__label__eng_Latn`` -> ``en``, ``__label__cmn_Hani`` -> ``zh``."""
    code = label.removeprefix("__label__")
    if "_" in code:  # GlotLID: ISO 639-3 + script
        code = code.split("_", 1)[0]
        if code in ("und", "zxx"):
            return UNKNOWN
        return MACRO_MEMBERS.get(code) or ISO3_TO_ISO1.get(code, code)
    return code


def normalize_code(code: str) -> str:
    """A language code as a user may write it, in ``lang``'s form: ``EN`` -> ``en``, ``eng`` -> ``en``,
    ``zh-Hans`` -> ``zh``."""
    code = code.strip().lower().replace("-", "_").split("_", 1)[0]
    return ISO3_TO_ISO1.get(code, code) if len(code) == 3 else code


def uses_spaces(lang: str) -> bool:
    return lang not in NO_SPACE_LANGS
