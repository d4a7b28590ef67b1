"""Hazard marts (fct_hazard, mart_hazard_rectification, dim_enterprise) against the generator's truth.

The acceptance bar of issue 5: overdue rate and median cycle days per district equal those computed
directly from the generator's hazard records. The expected figures are recomputed here in pandas from
truth/hazards_truth.csv.gz (true dates of every hazard) and truth/enterprises_truth.csv.gz (each
enterprise's district), never from the warehouse:

* like with like: only hazards the generator delivered clean (`delivery == "clean"`); the corrupted
  ones are quarantined by silver and must not reach the marts;
* the as-of date is the data's own latest date, as silver defines it: the latest day any delivered
  hazard record was updated, i.e. the latest found / rectified / accepted date over the clean hazards
  (the truth's own `overdue_open` column is evaluated at the window's last day, which is the same or
  later: it is checked as a superset);
* overdue = closed after the deadline, or still open with the deadline before the as-of date (the
  deadline day itself is in time); overdue rate = overdue / hazards found; medians and p90 are
  linear-interpolation quantiles over the hazards that reached the later step.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
CYCLES = ("found_to_rectified", "rectified_to_accepted", "found_to_accepted")
PERSONAL_COLUMNS = (
    "inspector_id",
    "legal_representative",
    "legal_representative_hash",
    "address",
    "address_scrubbed",
    "record_json",
)


# --- truth, recomputed independently ----------------------------------------------------------------------


def truth_hazards(truth_dir: Path) -> pd.DataFrame:
    """Clean hazards of the generator with district, domain, quarter, as-of flags and cycle days."""
    hz = pd.read_csv(truth_dir / "hazards_truth.csv.gz", dtype=str, keep_default_na=False)
    ents = pd.read_csv(truth_dir / "enterprises_truth.csv.gz", dtype=str, keep_default_na=False)
    taxonomy = pd.read_csv(REPO / "reference" / "taxonomy" / "taxonomy.csv", dtype=str)
    hz = hz[hz.delivery == "clean"].copy()
    hz["district_code"] = hz.credit_code.map(ents.set_index("credit_code").district_code)
    hz["domain_code"] = hz.subcategory_code.map(taxonomy.set_index("subcategory_code").domain_code)
    for col in ("found_date", "rectify_deadline", "rectified_date", "accepted_date"):
        hz[col] = pd.to_datetime(hz[col].replace("", None), format="%Y-%m-%d")
    as_of = max(hz.found_date.max(), hz.rectified_date.max(), hz.accepted_date.max())
    hz["as_of_date"] = as_of
    closed = hz.rectified_date.notna() | hz.accepted_date.notna()
    closed_on = hz.rectified_date.fillna(hz.accepted_date)
    hz["is_closed_late"] = closed & (closed_on > hz.rectify_deadline)
    hz["is_overdue_open"] = ~closed & (hz.rectify_deadline < as_of)
    hz["is_overdue"] = hz.is_closed_late | hz.is_overdue_open
    hz["days_found_to_rectified"] = (hz.rectified_date - hz.found_date).dt.days
    hz["days_rectified_to_accepted"] = (hz.accepted_date - hz.rectified_date).dt.days
    hz["days_found_to_accepted"] = (hz.accepted_date - hz.found_date).dt.days
    hz["found_quarter"] = hz.found_date.dt.to_period("Q").dt.start_time
    return hz.set_index("hazard_id", drop=False)


def truth_figures(hz: pd.DataFrame, by: str) -> pd.DataFrame:
    grouped = hz.groupby(by)
    out = pd.DataFrame(
        {
            "hazards_found": grouped.size(),
            "closed_late": grouped.is_closed_late.sum(),
            "overdue_open": grouped.is_overdue_open.sum(),
        }
    )
    out["overdue_rate"] = grouped.is_overdue.sum() / out.hazards_found
    for cycle in CYCLES:
        days = grouped[f"days_{cycle}"]
        out[f"median_days_{cycle}"] = days.median()
        out[f"p90_days_{cycle}"] = days.quantile(0.9)
    return out.sort_index()


# --- the warehouse ----------------------------------------------------------------------------------------


def mart_figures(con: duckdb.DuckDBPyConnection, grain: str, key: str) -> pd.DataFrame:
    df = con.sql(f"select * from mart_hazard_rectification where grain = '{grain}'").df()
    if key == "found_quarter":
        df[key] = pd.to_datetime(df[key])
    return df.set_index(key).sort_index()


def assert_same_figures(mart: pd.DataFrame, truth: pd.DataFrame, what: str) -> None:
    assert list(mart.index) == list(truth.index), f"{what}: grain values differ"
    for column in truth.columns:
        for key, expected in truth[column].items():
            actual = mart.at[key, column]
            if expected is None or (isinstance(expected, float) and math.isnan(expected)):
                assert actual is None or math.isnan(actual), f"{what} {key} {column}: {actual} != NULL"
            else:
                assert actual == pytest.approx(float(expected), rel=1e-12, abs=1e-9), (
                    f"{what} {key} {column}: mart {actual} != truth {expected}"
                )


def open_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True)


def silver_hazards(silver_dir: Path) -> pd.DataFrame:
    from citysafe.warehouse import delta_extension_path

    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    try:
        con.execute(f"LOAD '{delta_extension_path()}'")
        return con.sql(f"select * from delta_scan('{silver_dir / 'hazard'}')").df().set_index("hazard_id")
    finally:
        con.close()


# --- tests ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouse(built_city):
    con = open_warehouse(built_city.warehouse)
    yield con
    con.close()


@pytest.fixture(scope="module")
def truth(built_city):
    hz = truth_hazards(built_city.truth_dir)
    assert len(hz) > 0, "the fixture city has no clean hazards: nothing to compare"
    return hz


@pytest.mark.slow
def test_overdue_rate_and_median_cycle_days_per_district_equal_truth(warehouse, truth):
    assert_same_figures(
        mart_figures(warehouse, "district", "district_code"), truth_figures(truth, "district_code"), "district"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "grain, key",
    [
        ("quarter", "found_quarter"),
        ("severity", "severity"),
        ("domain", "domain_code"),
        ("enterprise", "enterprise_id"),
    ],
)
def test_other_grains_equal_truth(warehouse, truth, grain, key):
    hz = truth.rename(columns={"credit_code": "enterprise_id"}) if key == "enterprise_id" else truth
    assert_same_figures(mart_figures(warehouse, grain, key), truth_figures(hz, key), grain)


@pytest.mark.slow
def test_city_row_and_district_quarter_add_up_to_truth(warehouse, truth):
    city = warehouse.sql("select * from mart_hazard_rectification where grain = 'city'").df()
    assert len(city) == 1
    assert city.hazards_found[0] == len(truth)
    assert city.overdue_rate[0] == pytest.approx(truth.is_overdue.mean(), rel=1e-12)
    assert city.median_days_found_to_rectified[0] == pytest.approx(truth.days_found_to_rectified.median())
    cells = warehouse.sql(
        "select district_code, found_quarter, hazards_found, overdue_total "
        "from mart_hazard_rectification where grain = 'district_quarter'"
    ).df()
    expected = (
        truth.groupby(["district_code", "found_quarter"])
        .agg(hazards_found=("hazard_id", "size"), overdue_total=("is_overdue", "sum"))
        .reset_index()
    )
    cells["found_quarter"] = pd.to_datetime(cells.found_quarter)
    merged = cells.merge(expected, on=["district_code", "found_quarter"], how="outer", suffixes=("", "_truth"))
    assert merged.hazards_found.tolist() == merged.hazards_found_truth.tolist()
    assert merged.overdue_total.tolist() == merged.overdue_total_truth.tolist()


@pytest.mark.slow
def test_hazard_counts_per_district_equal_truth(warehouse, truth):
    fct = warehouse.sql("select district_code, count(*) as n from fct_hazard group by 1").df()
    assert (
        fct.set_index("district_code").n.sort_index().to_dict()
        == truth.groupby("district_code").size().sort_index().to_dict()
    )


@pytest.mark.slow
def test_fct_hazard_rows_are_the_clean_truth_hazards_with_their_dates_and_flags(warehouse, truth):
    fct = warehouse.sql("select * from fct_hazard").df().set_index("hazard_id").sort_index()
    expected = truth.sort_index()
    assert list(fct.index) == list(expected.index)  # quarantined hazards (dates out of order, ...) absent
    for col in ("found_date", "rectify_deadline", "rectified_date", "accepted_date", "as_of_date"):
        assert (pd.to_datetime(fct[col]).fillna(pd.Timestamp(0)) == expected[col].fillna(pd.Timestamp(0))).all(), col
    for col in ("is_closed_late", "is_overdue_open", "is_overdue"):
        assert fct[col].astype(bool).tolist() == expected[col].tolist(), col
    assert (fct.severity == expected.severity).all()
    assert (fct.subcategory_code == expected.subcategory_code).all()
    # the generator's own flags: closed_late exactly; its overdue_open (at the window's last day, which is
    # on or after the data's own as-of date) contains every hazard overdue as of the earlier date
    assert fct.is_closed_late.astype(bool).tolist() == (expected.closed_late == "True").tolist()
    assert not (fct.is_overdue_open.astype(bool) & (expected.overdue_open != "True")).any()


@pytest.mark.slow
def test_hazards_link_to_their_enterprises(warehouse, truth):
    fct = (
        warehouse.sql("""
        select f.hazard_id, f.enterprise_id, d.enterprise_id is not null as linked
        from fct_hazard f left join dim_enterprise d using (enterprise_id)
    """)
        .df()
        .set_index("hazard_id")
    )
    assert fct.linked.mean() >= 0.99
    assert (fct.enterprise_id == truth.credit_code.reindex(fct.index)).mean() >= 0.99


@pytest.mark.slow
def test_fct_hazard_agrees_with_silver_lifecycle_flags(warehouse, built_city):
    silver = silver_hazards(built_city.silver)
    fct = warehouse.sql("select * from fct_hazard").df().set_index("hazard_id").reindex(silver.index)
    assert fct.is_overdue_open.astype(bool).tolist() == silver.is_overdue_open.astype(bool).tolist()
    assert fct.is_closed.astype(bool).tolist() == silver.is_closed.astype(bool).tolist()
    assert fct.is_closed_late.astype("boolean").tolist() == silver.closed_late.astype("boolean").tolist()
    assert fct.days_found_to_rectified.astype("Int64").tolist() == silver.days_to_rectify.astype("Int64").tolist()
    assert fct.days_found_to_accepted.astype("Int64").tolist() == silver.days_to_accept.astype("Int64").tolist()
    assert (pd.to_datetime(fct.as_of_date) == pd.to_datetime(silver.as_of_date)).all()


@pytest.mark.slow
def test_dim_enterprise_is_the_published_registry_without_personal_data(warehouse, built_city):
    ents = pd.read_csv(built_city.truth_dir / "enterprises_truth.csv.gz", dtype=str, keep_default_na=False)
    clean = ents[ents.delivery == "clean"].set_index("credit_code").sort_index()
    dim = warehouse.sql("select * from dim_enterprise").df().set_index("enterprise_id").sort_index()
    assert list(dim.index) == list(clean.index)
    assert (dim.district_code == clean.district_code).all()
    assert (dim.legacy_reg_no.fillna("") == clean.legacy_reg_no).all()
    for table in ("dim_enterprise", "fct_hazard", "mart_hazard_rectification"):
        columns = {c.lower() for c in warehouse.sql(f"select * from {table} limit 0").columns}
        assert not columns & set(PERSONAL_COLUMNS), table
        assert not any(c.endswith("_hash") for c in columns), table
    # inspectors' staff numbers (AJ0001..AJ0399) appear in no text column of the hazard marts
    for table in ("fct_hazard", "mart_hazard_rectification"):
        df = warehouse.sql(f"select * from {table}").df()
        for col in df.select_dtypes(include="object"):
            assert not df[col].astype(str).str.fullmatch(r"AJ\d{4}").any(), (table, col)
