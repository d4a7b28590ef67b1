"""PII scan of the served warehouse: no person's name, phone number or ID number from the generator's
deliveries reaches any table or view, in any column (acceptance bar of the marts).

What is searched for (collected from the synthetic city's DELIVERED files, not from the lake):
- every value of the columns the source registry marks `sensitivity: personal` (reporter / caller names,
  phones, ID numbers, legal representatives), plus the inspectors' staff numbers (internal, never
  published);
- the phone and ID numbers the generator planted in free text (truth/pii_in_free_text.csv names the
  record and field; the numbers are read from the delivered field);
- phone / ID-number PATTERNS anywhere: an 11-digit mobile number (1[3-9] + 9 digits), a landline
  (0xx-xxxxxxxx) and an 18-character resident ID number with a valid check character.

Where: every column of every table and view of the built warehouse (information_schema), each value
cast to text. Digit runs are extracted and matched exactly (a phone inside an address is found; a
13-digit epoch or a 15-digit registration number is not a phone); names are matched as whole values
and, from three characters on, inside text. The scan itself is tested: values planted into a scratch
copy of the warehouse are found.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from citysafe.config import load_settings
from citysafe.formats import parse
from citysafe.identifiers import resident_id_is_valid
from citysafe.sources import load_registry
from citysafe.warehouse import delta_extension_path

DIGIT_RUN = r"[0-9]{7,}[Xx]?"  # candidate phone / ID numbers inside delivered text
# Digit runs inside warehouse values, group 2: not the fraction of a decimal (0.0186083229953761).
WAREHOUSE_DIGIT_RUN = r"(^|[^0-9.])([0-9]{7,}[Xx]?)"
LANDLINE = r"(?:^|[^0-9])(0[0-9]{2,3}-[0-9]{7,8})(?:[^0-9]|$)"
MOBILE = re.compile(r"1[3-9][0-9]{9}")
NOT_A_NAME = {"", "匿名"}  # "anonymous" is what the hotline delivers without a caller
STAFF_COLUMNS = {"hazard_inspections": ["inspector_id"]}


def is_resident_id(value: str) -> bool:
    """An 18-character PRC resident ID number: region code, a real birth date, valid check character."""
    if not resident_id_is_valid(value) or value[0] not in "1234568":
        return False
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return dt.date(1900, 1, 1) <= born <= dt.date.today()


def delivered_personal_values(synthetic: Path, truth_dir: Path) -> dict[str, set[str]]:
    """kind -> values: names, numbers (phones and ID numbers, digits only) and staff ids."""
    settings = load_settings(environ={"CITYSAFE_SYNTHETIC_ROOT": str(synthetic)})
    planted = {}
    with (truth_dir / "pii_in_free_text.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            planted.setdefault(row["source"], {}).setdefault(row["field"], set()).add(row["record_id"])
    values: dict[str, set[str]] = {"name": set(), "number": set(), "staff_id": set()}
    for source in load_registry().values():
        if "synthetic" not in source.tags or source.connector.type != "files":
            continue
        personal = source.personal_columns
        staff = STAFF_COLUMNS.get(source.name, [])
        free_text = planted.get(source.name, {})
        if not (personal or staff or free_text):
            continue
        record_id = (
            source.silver.fields.record_id
            if source.silver and not isinstance(source.silver.fields, dict)
            else (source.silver.fields.get("record_id") if source.silver else None)
        )
        folder = source.connector.folder(settings)
        for path in sorted(folder.glob(source.connector.pattern)):
            columns = parse(path.name, path.read_bytes(), source).columns
            for column in personal:
                for value in columns[column]:
                    value = (value or "").strip()
                    if not value or value in NOT_A_NAME:
                        continue
                    digits = re.sub(r"[^0-9Xx]", "", value)
                    if len(digits) >= 7 and len(digits) >= len(value) - 4:  # a phone or ID number
                        values["number"].add(digits.upper().removeprefix("86") if len(digits) == 13 else digits.upper())
                    else:
                        values["name"].add(value)
            for column in staff:
                values["staff_id"] |= {v.strip() for v in columns[column] if v and v.strip()}
            for field, ids in free_text.items():
                for rid, text in zip(columns[record_id], columns[field]):
                    if rid in ids and text:
                        values["number"] |= {m.upper() for m in re.findall(DIGIT_RUN, text)}
    return values


def scan(warehouse: Path, values: dict[str, set[str]]) -> list[tuple]:
    """(relation, column, kind, value) for every personal value or pattern found in the warehouse."""
    con = duckdb.connect(
        str(warehouse),
        read_only=True,
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"LOAD '{delta_extension_path()}'")  # the staging views read the silver Delta tables
        con.execute("CREATE TEMP TABLE pii (kind VARCHAR, value VARCHAR)")
        con.executemany("INSERT INTO pii VALUES (?, ?)", [(k, v) for k, vs in values.items() for v in sorted(vs)])
        columns = con.execute("""
            select c.table_schema, c.table_name, c.column_name
            from information_schema.columns c
            join information_schema.tables t using (table_catalog, table_schema, table_name)
            where c.table_schema not in ('information_schema', 'pg_catalog') and c.table_catalog = current_database()
            order by 1, 2, c.ordinal_position""").fetchall()
        assert columns, f"{warehouse}: no relation to scan"
        findings = []
        loaded = None
        for schema, table, column in columns:
            relation = f'"{schema}"."{table}"'
            if loaded != relation:  # read each relation once (a staging view re-reads its Delta table)
                con.execute(f"create or replace temp table rel as select * from {relation}")
                loaded = relation
            con.execute(f"""
                create or replace temp table cell as
                select distinct cast("{column}" as varchar) as v from rel where "{column}" is not null""")
            hits = con.execute(
                r"""
                with runs as (
                    select v, upper(unnest(regexp_extract_all(v, ?, 2))) as run from cell
                )
                -- a delivered phone / ID number, whole or inside text
                select 'number', run from runs join pii on pii.kind = 'number' and pii.value = run
                union all
                -- a mobile number or a valid-looking ID number that is nobody's on record
                select 'mobile_pattern', run from runs where regexp_full_match(run, '1[3-9][0-9]{9}')
                union all
                select 'id_number_pattern', run from runs where regexp_full_match(run, '[0-9]{17}[0-9X]')
                union all
                select 'landline_pattern', regexp_extract(v, ?, 1) from cell where regexp_matches(v, ?)
                union all
                -- a name or staff number as the whole value, or a name of 3+ characters inside text
                select pii.kind, pii.value from cell join pii
                    on pii.kind in ('name', 'staff_id')
                    and (cell.v = pii.value or (length(pii.value) >= 3 and pii.kind = 'name'
                                                and contains(cell.v, pii.value)))
            """,
                [WAREHOUSE_DIGIT_RUN, LANDLINE, LANDLINE],
            ).fetchall()
            for kind, value in hits:
                if kind == "id_number_pattern" and not is_resident_id(value):
                    continue  # e.g. an all-digit credit code (9142...): no region, no birth date
                findings.append((relation, column, kind, value))
        return sorted(set(findings))
    finally:
        con.close()


@pytest.fixture(scope="module")
def personal_values(built_city):
    values = delivered_personal_values(built_city.synthetic, built_city.truth_dir)
    # the collection itself must have found what the generator delivers, or the scan proves nothing
    assert len(values["name"]) >= 100 and len(values["number"]) >= 200 and len(values["staff_id"]) >= 5
    odd = [
        v
        for v in values["number"]  # mobile, ID number, landline with area code, local landline
        if not (MOBILE.fullmatch(v) or is_resident_id(v) or re.fullmatch(r"0[0-9]{9,11}|[2-9][0-9]{6,7}", v))
    ]
    assert odd == [], "collected numbers that are neither a phone nor an ID number"
    return values


@pytest.mark.slow
def test_no_personal_value_or_pattern_in_any_table_or_view(built_city, personal_values):
    findings = scan(built_city.warehouse, personal_values)
    assert findings == []


@pytest.mark.slow
def test_the_scan_finds_planted_personal_data(built_city, personal_values, tmp_path):
    """A scratch copy of the warehouse with personal data planted in a new table and a new view."""
    name = sorted(v for v in personal_values["name"] if len(v) >= 3)[0]
    two_char_name = sorted(v for v in personal_values["name"] if len(v) == 2)[0]
    number = sorted(v for v in personal_values["number"] if MOBILE.fullmatch(v))[0]
    id_number = sorted(v for v in personal_values["number"] if is_resident_id(v))[0]
    staff = sorted(personal_values["staff_id"])[0]
    scratch = tmp_path / built_city.warehouse.name  # same file name: same catalog name inside
    shutil.copyfile(built_city.warehouse, scratch)
    con = duckdb.connect(str(scratch))
    try:
        con.execute("create schema leak")
        con.execute(
            "create table leak.people (id integer, note varchar, contact varchar, reviewer varchar, caller varchar)"
        )
        con.execute(
            "insert into leak.people values (1, ?, ?, ?, ?)",
            [f"roof leak near gate, {name} called", f"call back {number}", staff, two_char_name],
        )
        con.execute("create table leak.numbers (n bigint)")
        con.execute("insert into leak.numbers values (?)", [int("13912345678")])  # a phone stored as a number
        con.execute(f"create view leak.ids as select 'ID {id_number} on file' as remark, '027-87654321' as tel")
    finally:
        con.close()
    found = {(rel, col, kind) for rel, col, kind, _ in scan(scratch, personal_values)}
    assert found >= {
        ('"leak"."people"', "note", "name"),
        ('"leak"."people"', "contact", "number"),
        ('"leak"."people"', "contact", "mobile_pattern"),
        ('"leak"."people"', "reviewer", "staff_id"),
        ('"leak"."people"', "caller", "name"),
        ('"leak"."numbers"', "n", "mobile_pattern"),
        ('"leak"."ids"', "remark", "number"),
        ('"leak"."ids"', "remark", "id_number_pattern"),
        ('"leak"."ids"', "tel", "landline_pattern"),
    }
    assert {rel for rel, *_ in found} == {'"leak"."people"', '"leak"."numbers"', '"leak"."ids"'}
