"""Real public data adapters (sources/real_*.yaml) against the attributed samples in tests/data/real.

The samples are the header and the first 150 records of every delivered file (see
tests/data/real/README.md), so a fresh clone needs nothing outside the repository. Every real source
is ingested into one shared lake for this module; the expected rows are counted here with Python's
csv module, independently of citysafe.formats.
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
from pathlib import Path

import pytest
from deltalake import DeltaTable

from citysafe.config import load_settings
from citysafe.sources import Source, load_registry
from spark_jobs import bronze

SAMPLES = Path(__file__).resolve().parent / "data" / "real"
REAL = {name: s for name, s in load_registry().items() if name.startswith("real_")}
# Source -> malformed records its sample holds on purpose. The delivered files have none (every record
# has the header's field count), so no sample does either.
MALFORMED_ON_PURPOSE: dict[str, int] = {}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    lake = tmp_path_factory.mktemp("real-sources") / "lake"
    return load_settings(environ={"CITYSAFE_LAKE_ROOT": str(lake), "CITYSAFE_REAL_DATA_ROOT": str(SAMPLES)})


def _files(source: Source, root: Path = SAMPLES) -> list[Path]:
    cfg = source.connector
    folder = Path(cfg.path.format(real_data_root=root))
    return sorted(p for p in (folder.rglob if cfg.recursive else folder.glob)(cfg.pattern) if p.is_file())


def _records(source: Source, path: Path) -> tuple[list[str], list[list[str]]]:
    """Header (renamed to the declared names) and the data records of a sample, read with csv."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    encoding = "utf-8-sig" if source.format.encoding in ("utf-8", "auto") else source.format.encoding
    reader = csv.reader(
        io.StringIO(data.decode(encoding), newline=""),
        delimiter=source.format.delimiter,
        quotechar=source.format.quotechar,
    )
    header = [source.format.rename.get(h.strip(), h.strip()) for h in next(reader)]
    return header, [record for record in reader if record]


def test_real_registry_entries_load_tagged_with_samples():
    assert len(REAL) >= 17, sorted(REAL)
    claimed: collections.Counter[Path] = collections.Counter()
    for name, source in REAL.items():
        assert "real" in source.tags, name
        # A real source's silver path, when it has one, maps another city's areas through its own geography.
        assert source.silver is None or source.silver.geography is not None, name
        assert source.connector.type == "files" and source.connector.path.startswith("{real_data_root}/"), name
        folder = Path(source.connector.path.format(real_data_root=SAMPLES))
        assert folder.is_dir(), f"{name}: no sample folder {folder}"
        files = _files(source)
        assert files, f"{name}: no sample file matches {source.connector.pattern!r} in {folder}"
        claimed.update(files)
        for path in files:  # every delivered column is declared, nothing declared is missing
            header, _ = _records(source, path)
            assert sorted(header) == sorted(source.columns), f"{name}: {path.name} header differs from the schema"
    every_sample = {p for p in SAMPLES.rglob("*") if p.is_file() and p.name != "README.md"}
    assert set(claimed) == every_sample, f"sample files no source reads: {sorted(every_sample - set(claimed))}"
    assert all(n == 1 for n in claimed.values()), (
        f"files read by two sources: {[p for p, n in claimed.items() if n > 1]}"
    )


def test_real_samples_are_small_and_attributed():
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 1_000_000, f"tests/data/real is {total} bytes; keep the samples small"
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for folder in {p.parent.name for p in SAMPLES.rglob("*.gz")}:
        assert f"`{folder}/`" in readme, f"tests/data/real/README.md has no source/licence note for {folder}"
    for path in SAMPLES.rglob("*.gz"):
        assert path.read_bytes()[4:8] == b"\0\0\0\0", f"{path}: gzip mtime must be 0 (reproducible samples)"


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_sample_ingests_completely_into_bronze(spark, settings, name):
    source = REAL[name]
    files = _files(source)
    delivered = {p.name: _records(source, p) for p in files}
    expected_rows = sum(len(records) for _, records in delivered.values())

    counts = bronze.ingest(spark, settings, source)

    table = DeltaTable(str(settings.bronze_dir / name)).to_pyarrow_table()
    assert table.num_rows == expected_rows == counts["rows_read"]
    errors = [e for e in table.column("_parse_error").to_pylist() if e is not None]
    assert len(errors) == MALFORMED_ON_PURPOSE.get(name, 0), collections.Counter(errors)
    assert table.column("_extra_fields").null_count == table.num_rows, "undeclared columns reached bronze"
    for column in source.required_columns:
        empty = sum(v is None or v.strip() == "" for v in table.column(column).to_pylist())
        assert empty == 0, f"{name}: required column {column} is empty in {empty} bronze rows"
    # Bronze keeps every record's text as delivered, under the declared names, with its file as lineage.
    rows = table.select(["_source_file", *source.columns]).to_pylist()
    for file_name, (header, records) in delivered.items():
        want = sorted(tuple(dict(zip(header, r))[c] for c in source.columns) for r in records)
        got = sorted(tuple(row[c] for c in source.columns) for row in rows if row["_source_file"] == file_name)
        assert got == want, f"{name}: bronze rows of {file_name} differ from the delivered records"
