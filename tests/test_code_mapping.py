"""Real-data crosswalks (reference/crosswalks/real_*.csv) and citysafe.code_mapping.

The expected figures are computed here from the attributed samples in tests/data/real with Python's
csv module and a per-source code rule written out again below, independently of code_mapping and
citysafe.formats.
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
from pathlib import Path

import pandas as pd
import pytest

from citysafe import code_mapping, reference
from citysafe.config import load_settings
from citysafe.sources import load_registry

SAMPLES = Path(__file__).resolve().parent / "data" / "real"
CROSSWALK_DIR = reference.CROSSWALK_DIR
REAL = {name: s for name, s in load_registry().items() if name.startswith("real_")}
REAL_CROSSWALKS = sorted(p.stem for p in CROSSWALK_DIR.glob("real_*.csv"))
# Derived from the sources' YAML `code:` sections: the configuration is data, not Python.
CODE_SPECS = code_mapping.code_specs()
NO_CODE_SYSTEM = code_mapping.no_code_system()


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- the crosswalk files ----------------------------------------------------------------------------


def test_real_crosswalks_exist_for_every_code_spec():
    assert REAL_CROSSWALKS, "no reference/crosswalks/real_*.csv"
    assert {s.crosswalk for s in CODE_SPECS.values()} == set(REAL_CROSSWALKS)


@pytest.mark.parametrize("name", REAL_CROSSWALKS)
def test_real_crosswalk_validates(name):
    xw = reference.crosswalk(name)  # the project's own validation
    rows = _csv_rows(CROSSWALK_DIR / f"{name}.csv")  # and an independent one
    assert rows and list(rows[0]) == ["source_code", "source_label", "subcategory_code"]
    codes = [r["source_code"].strip() for r in rows]
    assert len(codes) == len(set(codes)), f"{name}: duplicate source_code"
    taxonomy = {r["subcategory_code"] for r in _csv_rows(reference.TAXONOMY_FILE)}
    assert not {r["subcategory_code"] for r in rows} - taxonomy
    assert all(r["source_label"].strip() for r in rows)
    assert len(xw) == len(rows)


def test_every_real_source_is_configured_once():
    assert len(CODE_SPECS) == 9 and len(NO_CODE_SYSTEM) == 8
    assert set(CODE_SPECS) | set(NO_CODE_SYSTEM) == set(REAL)
    assert not set(CODE_SPECS) & set(NO_CODE_SYSTEM)
    for name, spec in CODE_SPECS.items():
        missing = [c for c in [*spec.input_columns, *spec.label_columns] if c not in REAL[name].columns]
        assert not missing, f"{name}: {missing} not in sources/{name}.yaml"


def test_decided_codes_are_not_also_mapped():
    """A code is either in the crosswalk or carries a steward decision, never both (patterns aside);
    every decisions file belongs to a crosswalk and is valid."""
    files = sorted(reference.DECISIONS_DIR.glob("*.csv"))
    assert files
    for path in files:
        crosswalk = path.stem
        mapped = set(reference.crosswalk(crosswalk)["source_code"])
        found = code_mapping.decisions(crosswalk)
        assert found and {d.decision for d in found} <= set(reference.DECISIONS)
        exact = {d.pattern for d in found if not d.is_pattern}
        assert not exact & mapped, f"{crosswalk}: {sorted(exact & mapped)}"
        assert all(d.note.strip() for d in found)


def test_decision_file_errors_name_file_row_and_value(tmp_path):
    (tmp_path / "x.csv").write_text("source_code,decision,note\nA,out_of_scope,casework\nB,maybe,hmm\n")
    with pytest.raises(reference.ReferenceError, match=r"x.csv: row 3: decision 'maybe' is not one of"):
        reference.crosswalk_decisions("x", tmp_path)
    (tmp_path / "y.csv").write_text("source_code,decision,note\nA*,out_of_scope,a\nA*,unclassifiable,b\n")
    with pytest.raises(reference.ReferenceError, match=r"y.csv: source_code 'A\*' appears twice"):
        reference.crosswalk_decisions("y", tmp_path)
    assert reference.crosswalk_decisions("absent", tmp_path).empty


def test_glob_patterns_match_like_fnmatch_as_regexes():
    import fnmatch
    import re

    codes = ["Aging|Home care", "Aging|", "|Noise", "15E", "15X", "a.b|c", "Public Safety|Loitering", ""]
    for pattern in ["Aging|*", "*|", "|*", "15[EH]", "a.b|?", "Public Safety|Loitering", "[!1]*"]:
        rx = re.compile(code_mapping.glob_regex(pattern))
        for code in codes:
            assert bool(rx.match(code)) == fnmatch.fnmatchcase(code, pattern), (pattern, code)


# --- the code of a row ------------------------------------------------------------------------------


def test_codes_composite_normalised_constant_and_rules():
    composite = code_mapping.CodeSpec("x", columns=("a", "b"))
    df = pd.DataFrame({"a": [" Noise ", "", "", None], "b": ["Loud", "Only b", "  ", None]})
    assert code_mapping.codes(df, composite).tolist() == ["Noise|Loud", "|Only b", None, None]

    floats = code_mapping.CodeSpec("x", columns=("c",), normalize="strip_decimal_zero")
    df = pd.DataFrame({"c": ["12.0", "8", "99.00", "1.5", ""]})
    assert code_mapping.codes(df, floats).tolist() == ["12", "8", "99", "1.5", None]

    constant = code_mapping.CodeSpec("x", constant="k")
    assert code_mapping.codes(pd.DataFrame(index=range(2)), constant).tolist() == ["k", "k"]

    rules = CODE_SPECS["real_nypd_collisions"]
    base = {c: "0" for c in rules.input_columns}
    cases = [
        ({}, "NO INJURY"),
        ({"number_of_persons_injured": "2"}, "PERSONS INJURED"),
        ({"number_of_persons_injured": "1", "number_of_pedestrians_injured": "1"}, "PEDESTRIANS INJURED"),
        ({"number_of_persons_killed": "1", "number_of_pedestrians_injured": "1"}, "PERSONS KILLED"),
        ({"number_of_cyclist_injured": "1"}, "PERSONS INJURED"),
        ({"number_of_persons_injured": ""}, None),  # an unknown count: no code
        ({"number_of_persons_injured": "", "number_of_motorist_killed": "1"}, "PERSONS KILLED"),
    ]
    df = pd.DataFrame([{**base, **change} for change, _ in cases])
    assert code_mapping.codes(df, rules).tolist() == [want for _, want in cases]


def test_review_note_patterns():
    assert code_mapping.review_note("real_nyc_complaint_category", "Aging|Senior Centers").startswith("out_of_scope: ")
    assert code_mapping.review_note("real_nyc_complaint_category", "Public Safety|").startswith("out_of_scope: ")
    assert code_mapping.decision_for("real_chicago_iucr", "1020").decision == "unclassifiable"
    assert code_mapping.decision_for("real_chicago_iucr", "502T").decision == "taxonomy_gap"
    assert code_mapping.review_note("real_houston_offense", "arson") is None
    assert code_mapping.review_note("real_chicago_iucr", None) is None


# --- rates on the samples, computed independently ---------------------------------------------------


def _sample_records(source) -> list[dict[str, str]]:
    """Every record of the source's sample files, keyed by the declared (renamed) column names."""
    out = []
    for path in code_mapping.source_files(source, SAMPLES):
        text = gzip.decompress(path.read_bytes()).decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [source.format.rename.get(h.strip(), h.strip()) for h in next(reader)]
        out += [dict(zip(header, record)) for record in reader if record]
    return out


def _n(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _nypd(r):
    n = {k: _n(v.strip()) for k, v in r.items() if k.startswith("number_of_")}
    if any(
        (n[k] or 0) > 0
        for k in (
            "number_of_persons_killed",
            "number_of_pedestrians_killed",
            "number_of_cyclist_killed",
            "number_of_motorist_killed",
        )
    ):
        return "PERSONS KILLED"
    if (n["number_of_pedestrians_injured"] or 0) > 0:
        return "PEDESTRIANS INJURED"
    if any(
        (n[k] or 0) > 0
        for k in ("number_of_persons_injured", "number_of_cyclist_injured", "number_of_motorist_injured")
    ):
        return "PERSONS INJURED"
    return "NO INJURY" if all(v is not None for v in n.values()) else None


def _fars(r):
    v = r["harm_ev"].strip()
    return (str(int(float(v))) if float(v).is_integer() else v) if v else None


def _complaint(r):
    t, d = r["complaint_type"].strip(), r["descriptor"].strip()
    return f"{t}|{d}" if t or d else None


INDEPENDENT = {
    "real_chicago_crimes": lambda r: r["iucr"].strip() or None,
    "real_houston_crime": lambda r: r["offense"].strip() or None,
    "real_nyc_vehicle_thefts": lambda r: "motor vehicle theft",
    "real_nypd_collisions": _nypd,
    "real_sf_fire_calls": lambda r: r["call_type"].strip() or None,
    "real_fars_crashes": _fars,
    "real_nyc_constituent_complaints": _complaint,
    "real_nyc_restaurant_violations": lambda r: r["violation_code"].strip() or None,
    "real_nyc_restaurant_violation_codes": lambda r: r["violation_code"].strip() or None,
}


def test_independent_rules_cover_every_spec():
    assert set(INDEPENDENT) == set(CODE_SPECS)


@pytest.mark.parametrize("name", sorted(CODE_SPECS))
def test_sample_mapping_rates_match_an_independent_count(name):
    source = REAL[name]
    records = _sample_records(source)
    found = [INDEPENDENT[name](r) for r in records]
    mapped_codes = {
        r["source_code"].strip(): r["subcategory_code"]
        for r in _csv_rows(CROSSWALK_DIR / f"{CODE_SPECS[name].crosswalk}.csv")
    }
    counts = collections.Counter(c for c in found if c is not None)
    rows_mapped = sum(n for c, n in counts.items() if c in mapped_codes)
    frequent = [c for c, n in counts.items() if n >= code_mapping.FREQUENT]

    stats = code_mapping.mapping_stats(name, code_mapping.read_delivered(source, SAMPLES))

    assert stats.rows == len(records) > 0
    assert stats.rows_with_code == sum(counts.values())
    assert stats.rows_mapped == rows_mapped
    assert stats.mapping_rate == pytest.approx(rows_mapped / len(records))
    assert stats.distinct_codes == len(counts)
    assert stats.distinct_mapped == sum(c in mapped_codes for c in counts)
    want_unmapped = {c: n for c, n in counts.items() if c not in mapped_codes}
    if len(records) - sum(counts.values()):
        want_unmapped[code_mapping.EMPTY] = len(records) - sum(counts.values())
    assert dict(stats.unmapped) == want_unmapped
    assert [n for _, n in stats.unmapped] == sorted(want_unmapped.values(), reverse=True)
    assert stats.frequent_codes == len(frequent)
    assert stats.frequent_rate == pytest.approx(
        sum(c in mapped_codes for c in frequent) / len(frequent) if frequent else 1.0
    )
    by_sub = collections.Counter()
    for c, n in counts.items():
        if c in mapped_codes:
            by_sub[mapped_codes[c]] += n
    assert stats.by_subcategory == dict(by_sub)


def test_sample_rates_of_the_single_offence_and_derived_sources():
    """Sources whose code cannot miss: every row maps."""
    for name in ("real_nyc_vehicle_thefts", "real_nypd_collisions", "real_fars_crashes"):
        stats = code_mapping.mapping_stats(name, code_mapping.read_delivered(REAL[name], SAMPLES))
        assert stats.mapping_rate == 1.0 and stats.frequent_rate == 1.0, name


def test_mapping_stats_accepts_arrow_and_refuses_missing_columns():
    import pyarrow as pa

    table = pa.table({"offense": ["theft", "jaywalking", "murder", "murder", None]})
    stats = code_mapping.mapping_stats("real_houston_crime", table)
    assert (stats.rows, stats.rows_mapped, stats.distinct_codes) == (5, 3, 3)
    assert stats.unmapped == [("(empty)", 1), ("jaywalking", 1)]
    assert stats.rows_by_decision == {"undecided": 1}
    with pytest.raises(ValueError, match="offense"):
        code_mapping.mapping_stats("real_houston_crime", pd.DataFrame({"other": ["x"]}))


# --- the Spark form of the rule and bronze input ----------------------------------------------------


def _edge_cases() -> dict[str, pd.DataFrame]:
    """Inputs the samples lack: blank, padded, garbage and float-formatted values."""
    nypd = CODE_SPECS["real_nypd_collisions"].input_columns
    rows = [
        dict.fromkeys(nypd, "0"),
        {**dict.fromkeys(nypd, "0"), "number_of_persons_injured": ""},
        {**dict.fromkeys(nypd, "0"), "number_of_persons_injured": "x", "number_of_cyclist_injured": " 2 "},
        {**dict.fromkeys(nypd, None), "number_of_motorist_killed": "1.0"},
    ]
    return {
        "real_nypd_collisions": pd.DataFrame(rows),
        "real_nyc_constituent_complaints": pd.DataFrame(
            {"complaint_type": [" A ", "", None, "B"], "descriptor": ["d", " e", None, ""]}
        ),
        "real_fars_crashes": pd.DataFrame({"harm_ev": ["12.0", " 8.00 ", "", None, "7.5"]}),
    }


def test_spark_code_matches_the_pandas_rule(spark):
    cases = [(name, code_mapping.read_delivered(REAL[name], SAMPLES)) for name in sorted(CODE_SPECS)]
    for name, frame in [*cases, *_edge_cases().items()]:
        spec = CODE_SPECS[name]
        frame = frame.reset_index(drop=True)
        frame = frame.astype(object).where(frame.notna(), None)
        frame["_i"] = range(len(frame))
        schema = ", ".join([*(f"`{c}` string" for c in spec.input_columns), "_i bigint"])
        df = spark.createDataFrame(frame[[*spec.input_columns, "_i"]], schema=schema)
        got = [r["code"] for r in df.select("_i", code_mapping.spark_code(spec).alias("code")).orderBy("_i").collect()]
        assert got == code_mapping.codes(frame, spec).tolist(), name


def test_bronze_rows_give_the_same_figures_as_the_files(spark, tmp_path):
    from spark_jobs import bronze

    settings = load_settings(
        environ={"CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"), "CITYSAFE_REAL_DATA_ROOT": str(SAMPLES)}
    )
    for name in ("real_nypd_collisions", "real_nyc_vehicle_thefts"):
        bronze.ingest(spark, settings, REAL[name])
        from_bronze = code_mapping.mapping_stats(name, code_mapping.read_bronze(settings, REAL[name]))
        from_files = code_mapping.mapping_stats(name, code_mapping.read_delivered(REAL[name], SAMPLES))
        assert from_bronze == from_files, name


# --- the `code:` section of a source YAML ---------------------------------------------------------


def _with_code(tmp_path, code_yaml: str):
    """sources/real_houston_crime.yaml with its `code:` section replaced."""
    from citysafe.sources import SOURCES_DIR, load_source_file

    text = (SOURCES_DIR / "real_houston_crime.yaml").read_text(encoding="utf-8")
    start = text.index("\ncode:")
    end = text.index("\nsilver:", start)
    path = tmp_path / "real_houston_crime.yaml"
    path.write_text(text[:start] + "\n" + code_yaml.strip("\n") + text[end:], encoding="utf-8")
    return path, load_source_file


@pytest.mark.parametrize(
    "code_yaml, message",
    [
        (
            "code:\n  crosswalk: real_houston_ofense\n  columns: [offense]",
            "code.crosswalk: 'real_houston_ofense' has no file reference/crosswalks/real_houston_ofense.csv",
        ),
        (
            "code:\n  crosswalk: real_houston_offense\n  columns: [offence]",
            "code.columns[0]: 'offence' is not a column in schema",
        ),
        (
            "code:\n  crosswalk: real_houston_offense\n  rules: [{code: X, columns: [beat, victims]}]",
            "code.rules[0].columns[1]: 'victims' is not a column in schema",
        ),
        (
            "code:\n  crosswalk: real_houston_offense\n  columns: [offense]\n  constant: x",
            "code: give exactly one of columns, constant or rules",
        ),
        ("code:\n  columns: [offense]", "code: crosswalk: required"),
        ("code:\n  crosswalk: real_houston_offense\n  colums: [offense]", "code.colums: unknown key"),
        (
            "code:\n  crosswalk: real_chicago_iucr\n  columns: [offense]",
            "silver.crosswalk: 'real_houston_offense' differs from code.crosswalk 'real_chicago_iucr'",
        ),
    ],
)
def test_a_malformed_code_section_names_the_file_and_the_key(tmp_path, code_yaml, message):
    from citysafe.sources import SourceError

    path, load = _with_code(tmp_path, code_yaml)
    with pytest.raises(SourceError) as info:
        load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: invalid source entry: {message}"), text
    assert "\n" not in text and "Value error" not in text
    assert info.value.exit_code == 2


def test_a_new_code_system_is_one_yaml_section(tmp_path):
    """A composite code from two delivered columns, declared only in YAML, is picked up by code_mapping."""
    path, load = _with_code(tmp_path, "code:\n  crosswalk: real_houston_offense\n  columns: [offense, beat]")
    spec = code_mapping.spec_of(load(path))
    frame = pd.DataFrame({"offense": ["Theft", " ", None], "beat": ["1A10", "2B", None]})
    assert code_mapping.codes(frame, spec).tolist() == ["Theft|1A10", "|2B", None]
