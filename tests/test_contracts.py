"""The filter stage (data contracts): every predicate on both sides, missing and unreadable values, the reason
strings, config errors (exit 2 naming the key), and a curate run whose rejects/ hold the filtered records."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from testkit.runs import assert_accounting, config_file, curate, read_dir, write_jsonl
from thresher.cli import main as cli_main
from thresher.core.config import ConfigError, validate
from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext, run_map_stage
from thresher.curate.stages.filter import Filter, FilterConfig, host


def apply(predicates: list[dict], rows: list[dict]) -> pd.DataFrame:
    """The filter over ``rows`` (string values, as the readers give them); one result row per input row."""
    frame = pd.DataFrame(rows)
    frame["id"] = [f"r{i}" for i in range(len(rows))]
    frame[[REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]] = None
    stage = Filter(validate(FilterConfig, {"predicates": predicates}, prefix="stages.0.filter"), StageContext())
    return run_map_stage(stage, frame)


def reasons(predicate: dict, field: str, values: list) -> list[str | None]:
    return apply([predicate], [{field: v} for v in values])[REJECT_REASON].tolist()


def test_number_range_both_sides_and_unreadable_values():
    p = {"field": "year", "min": 2015, "max": 2024}
    assert reasons(p, "year", ["2015", "2024", "2019.5", " 2020 ", "2014", "2025", "20x", "1e9"]) == [
        None,
        None,
        None,
        None,
        "filter:year.min",
        "filter:year.max",
        "filter:year.invalid",
        "filter:year.max",
    ]
    out = apply([p], [{"year": "2014"}, {"year": "abc"}])
    assert out[REJECT_DETAIL].tolist() == ["year=2014 < 2015", "year=abc is not a number"]
    assert out[REJECT_STAGE].tolist() == ["filter", "filter"]
    assert reasons({"field": "score", "min": 0.5}, "score", ["0.5", "0.49", "7"]) == [None, "filter:score.min", None]


def test_date_range_both_sides_zones_and_whole_day_max():
    p = {"field": "date", "min": "2020-01-01", "max": dt.date(2020, 12, 31)}  # a YAML date is a datetime.date
    values = [
        "2020-01-01",
        "2020-12-31T23:59:59Z",
        "2020-06-01T10:00:00+02:00",
        "2019-12-31T23:59:59",
        "2021-01-01",
        "2021-01-01T00:30:00+02:00",
        "last year",
    ]
    assert reasons(p, "date", values) == [
        None,
        None,
        None,
        "filter:date.min",
        "filter:date.max",
        None,
        "filter:date.invalid",
    ]  # 00:30 at +02:00 is 22:30 UTC on Dec 31
    exact = {"field": "date", "max": "2020-06-01T12:00:00Z"}  # a time as max: that instant, included
    assert reasons(exact, "date", ["2020-06-01T12:00:00Z", "2020-06-01T12:00:01Z"]) == [None, "filter:date.max"]
    assert "date=2021-01-01 > 2020-12-31" in apply([p], [{"date": "2021-01-01"}])[REJECT_DETAIL][0]


def test_allow_and_deny_lists_ignore_case_and_spaces():
    allow = {"field": "license", "allow": ["cc-by", "CC0", "mit"]}
    assert reasons(allow, "license", ["MIT", " cc0 ", "cc-by", "gpl-3.0", "cc-by-nc"]) == [
        None,
        None,
        None,
        "filter:license.allow",
        "filter:license.allow",
    ]
    deny = {"field": "source", "deny": ["spamsite"]}
    assert reasons(deny, "source", ["SpamSite", "wiki", None, ""]) == ["filter:source.deny", None, None, None]
    out = apply([allow], [{"license": "gpl-3.0"}])
    assert out[REJECT_DETAIL][0] == "license=gpl-3.0 not in allow"
    assert reasons({"field": "lang", "allow": [1, 2]}, "lang", ["1", "3"]) == [
        None,
        "filter:lang.allow",
    ]  # YAML numbers


def test_domain_lists_cover_subdomains_only():
    deny = {"field": "url", "domain_deny": ["example.com", "Spam.ORG."]}
    urls = [
        "https://example.com/a",
        "http://www.EXAMPLE.com:8080/x?q=1",
        "https://badexample.com/",
        "https://news.spam.org/item",
        "https://spam.org.evil.net/",
        "example.com/path",
        "http://[::1/",
    ]
    assert reasons(deny, "url", urls) == [
        "filter:url.domain_deny",
        "filter:url.domain_deny",
        None,
        "filter:url.domain_deny",
        None,
        "filter:url.domain_deny",
        "filter:url.invalid",
    ]
    allow = {"field": "domain", "domain_allow": ["wikipedia.org"]}
    assert reasons(allow, "domain", ["en.wikipedia.org", "wikipedia.org", "wikipedia.org.fake.com", None]) == [
        None,
        None,
        "filter:domain.domain_allow",
        "filter:domain.missing",
    ]
    assert [host(u) for u in ("HTTPS://A.B.example.com./x", "example.com", "/a/path")] == [
        "a.b.example.com",
        "example.com",
        None,
    ]


def test_regex_and_required_fields():
    rx = {"field": "title", "regex": r"^[A-Z][a-z]+( [a-z]+)*$"}
    assert reasons(rx, "title", ["Good title here", "lower case", "Trailing space!", None]) == [
        None,
        "filter:title.regex",
        "filter:title.regex",
        "filter:title.missing",
    ]
    out = apply(
        [{"required": ["title", "text"]}],
        [
            {"title": "T", "text": "x"},
            {"title": "  ", "text": "x"},
            {"title": "T", "text": None},
            {"title": None, "text": ""},
        ],
    )
    assert out[REJECT_REASON].tolist() == [
        None,
        "filter:title.required",
        "filter:text.required",
        "filter:title.required",
    ]
    assert out[REJECT_DETAIL][1] == "no value"


def test_missing_values_and_the_order_of_predicates():
    rows = [{"year": None, "source": None}, {"year": "", "source": "spam"}, {"year": "2030", "source": "spam"}]
    # a missing value fails a range (or allow) predicate, passes a deny list, and `missing: keep` keeps it
    assert apply([{"field": "year", "max": 2024}], rows)[REJECT_REASON].tolist() == [
        "filter:year.missing",
        "filter:year.missing",
        "filter:year.max",
    ]
    assert apply([{"field": "year", "max": 2024, "missing": "keep"}], rows)[REJECT_REASON].tolist() == [
        None,
        None,
        "filter:year.max",
    ]
    # the first failing predicate names the reject
    both = [{"field": "source", "deny": ["spam"]}, {"field": "year", "max": 2024, "missing": "keep"}]
    assert apply(both, rows)[REJECT_REASON].tolist() == [None, "filter:source.deny", "filter:source.deny"]
    # a field the records do not have (a typo): every record, reason missing_field naming it
    out = apply([{"field": "yaer", "min": 2000}], rows)
    assert out[REJECT_REASON].tolist() == ["missing_field"] * 3 and "yaer" in out[REJECT_DETAIL][0]


@pytest.mark.parametrize(
    "predicate, key, message",
    [
        ({"field": "year", "minimum": 2015}, "stages.0.filter.predicates.0.minimum", "unknown key"),
        ({"field": "year"}, "stages.0.filter.predicates.0", "with a test among"),
        ({"field": "date", "min": "soon"}, "stages.0.filter.predicates.0.min", "neither a number nor an ISO 8601 date"),
        (
            {"field": "date", "min": 5, "max": "2020-01-01"},
            "stages.0.filter.predicates.0",
            "both numbers or both dates",
        ),
        ({"field": "year", "min": 2024, "max": 2015}, "stages.0.filter.predicates.0", "min is greater than max"),
        ({"field": "year", "min": float("nan")}, "stages.0.filter.predicates.0.min", "not a finite number"),
        ({"field": "year", "max": "nan"}, "stages.0.filter.predicates.0.max", "not a finite number"),
        ({"field": "title", "regex": "(unclosed"}, "stages.0.filter.predicates.0.regex", "not an RE2 pattern"),
        ({"field": "license", "allow": []}, "stages.0.filter.predicates.0.allow", "at least 1"),
        ({"required": ["title"], "missing": "keep"}, "stages.0.filter.predicates.0", "no other key"),
    ],
)
def test_predicate_config_errors_name_the_key(predicate, key, message):
    with pytest.raises(ConfigError, match=f"{key}: .*{message}"):
        validate(FilterConfig, {"predicates": [predicate]}, prefix="stages.0.filter")


def test_unknown_predicate_key_exits_2_naming_it(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello world", "year": 2020}])
    cfg = config_file(
        tmp_path,
        {
            "input": {"paths": [str(src)]},
            "output": {"path": str(tmp_path / "out")},
            "stages": [{"normalize": {}}, {"filter": {"predicates": [{"field": "year", "mn": 1}]}}],
        },
    )
    assert cli_main(["curate", cfg]) == 2
    assert "stages.1.filter.predicates.0.mn: unknown key" in capsys.readouterr().err


def test_curate_run_writes_filtered_records_to_rejects_with_the_predicate(ray_local, tmp_path):
    docs = [
        {"id": "keep-1", "text": "A kept document.", "year": 2019, "license": "MIT", "url": "https://ok.org/a"},
        {"id": "keep-2", "text": "Another one.", "year": "2024", "license": "cc0", "url": "https://www.ok.org/b"},
        {"id": "old", "text": "Too old.", "year": 2001, "license": "mit", "url": "https://ok.org/c"},
        {"id": "gpl", "text": "Wrong licence.", "year": 2020, "license": "GPL", "url": "https://ok.org/d"},
        {"id": "spam", "text": "From a denied domain.", "year": 2020, "license": "mit", "url": "http://x.spam.com/e"},
        {"id": "no-year", "text": "No year at all.", "license": "mit", "url": "https://ok.org/f"},
    ]
    stages = [
        {
            "filter": {
                "predicates": [
                    {"field": "year", "min": 2015, "max": 2024},
                    {"field": "license", "allow": ["mit", "cc0"]},
                ]
            }
        },
        {"normalize": {}},
        {"filter": {"predicates": [{"field": "url", "domain_deny": ["spam.com"]}]}},
    ]
    manifest, out = curate(tmp_path, [write_jsonl(tmp_path / "in.jsonl", docs)], stages)
    assert_accounting(manifest, out)
    by_stage = manifest["counts"]["by_stage"]  # a stage used again is counted apart, as filter-2
    assert by_stage["filter"] == {"in": 6, "out": 3, "rejected": 3}
    assert by_stage["filter-2"] == {"in": 3, "out": 2, "rejected": 1}
    kept = read_dir(out / "data").to_pandas()
    assert sorted(kept["id"]) == ["keep-1", "keep-2"] and set(kept["license"]) == {"MIT", "cc0"}
    rejects = read_dir(out / "rejects").to_pandas().set_index("id")
    assert rejects["stage"].to_dict() == {"old": "filter", "gpl": "filter", "no-year": "filter", "spam": "filter-2"}
    assert rejects["reason"].to_dict() == {
        "old": "filter:year.min",
        "gpl": "filter:license.allow",
        "spam": "filter:url.domain_deny",
        "no-year": "filter:year.missing",
    }
    assert rejects.loc["old", "detail"] == "year=2001 < 2015" and rejects.loc["gpl", "license"] == "GPL"
