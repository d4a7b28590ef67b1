"""Which column(s) of each real public dataset hold its incident code, which crosswalk maps it, and
how well the crosswalk covers the data.

Declared per source in its YAML (`code:` section, read by `spec_of` / `code_specs`): the code is one of
  * one delivered column (Chicago `iucr`, Houston `offense`, SF `call_type`, FARS `harm_ev` ...);
  * several columns joined with `SEPARATOR` (NYC complaints: `complaint_type|descriptor`, because
    the type alone - "Housing and Buildings", "Public Safety" - names no incident);
  * a constant, when the publisher filtered the dataset on one offence and dropped the column
    (NYC vehicle thefts: CODE `offense_group == "motor vehicle theft"`);
  * the first matching `CountRule`, when the dataset states its outcome as counts rather than a code
    (NYPD collisions: killed > pedestrian injured > injured > no injury).
Codes are trimmed; `normalize="strip_decimal_zero"` turns FARS's float-formatted codes ("12.0") into
the codebook's ("12").

A new code system is one YAML section and one crosswalk file, no code. `spark_code()` is the same rule
as a Spark column, for the silver job and for `spark_jobs.unmapped_codes`.

Codes a crosswalk deliberately leaves out carry a steward decision in
reference/crosswalks/decisions/<crosswalk>.csv (`decisions()`): `out_of_scope` (not a safety
incident), `unclassifiable` (a safety matter whose code does not say which subcategory) or
`taxonomy_gap` (waiting for a subcategory). Silver quarantines the first two under their own reasons
(`out_of_scope`, `unclassifiable_code`) and only undecided codes and gaps as `unmapped_code`, so the
stewards' queue holds only what needs work. `mapping_stats()` reports, per source: rows, rows mapped,
rows decided out of scope / unclassifiable, the mapping rate, unmapped codes with counts, and whether
every code occurring at least `FREQUENT` times is mapped or decided.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import pandas as pd

from citysafe import reference
from citysafe.sources import SourceError, get_source, load_registry

SEPARATOR = "|"  # joins the parts of a composite code (no part of a real code contains it)
FREQUENT = 10  # codes occurring at least this often must be mapped or reviewed
EMPTY = "(empty)"  # how a row without a code is shown (the silver jobs' detail uses the same text)
NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"  # a count rule reads only plain decimals (else: unknown)


@dataclasses.dataclass(frozen=True)
class CountRule:
    """Derived code: `code` when any of `columns` holds a number > 0."""

    code: str
    columns: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CodeSpec:
    crosswalk: str  # reference/crosswalks/<crosswalk>.csv
    columns: tuple[str, ...] = ()  # delivered column(s) holding the code
    constant: str | None = None  # the whole dataset is this one code
    rules: tuple[CountRule, ...] = ()  # derived code, first match wins
    default: str | None = None  # rules: no rule matched and every count is a number
    normalize: Literal["none", "strip_decimal_zero"] = "none"
    label_columns: tuple[str, ...] = ()  # the dataset's own label of the code (documentation)
    note: str = ""

    def __post_init__(self):
        ways = sum([bool(self.columns), self.constant is not None, bool(self.rules)])
        if ways != 1:
            raise ValueError(f"{self.crosswalk}: give exactly one of columns, constant or rules")
        if self.default is not None and not self.rules:
            raise ValueError(f"{self.crosswalk}: default only applies to rules")

    @property
    def input_columns(self) -> list[str]:
        """Delivered columns the code is computed from."""
        cols = list(self.columns)
        for rule in self.rules:
            cols += [c for c in rule.columns if c not in cols]
        return cols


def spec_of(source) -> CodeSpec | None:
    """The code rule a source declares in its YAML (`code:` section), or None (no code / no section)."""
    code = getattr(source, "code", None)
    if code is None or code.none is not None:
        return None
    return CodeSpec(
        code.crosswalk,
        columns=tuple(code.columns),
        constant=code.constant,
        rules=tuple(CountRule(r.code, tuple(r.columns)) for r in code.rules),
        default=code.default,
        normalize=code.normalize,
        label_columns=tuple(code.label_columns),
        note=code.note,
    )


def required_spec(source) -> CodeSpec:
    """The code rule of `source` (a Source or a registered name); a one-line SourceError if it has none."""
    if isinstance(source, str):
        source = get_source(source)
    spec = spec_of(source)
    if spec is None:
        raise SourceError(f"{source.file}: code: no code system with a crosswalk is declared for {source.name}")
    return spec


def code_specs(registry: Mapping | None = None) -> dict[str, CodeSpec]:
    """Every registered source with a code system, by name (from sources/*.yaml)."""
    registry = load_registry() if registry is None else registry
    return {name: spec for name, source in registry.items() if (spec := spec_of(source)) is not None}


def no_code_system(registry: Mapping | None = None) -> dict[str, str]:
    """Sources declared `code: {none: ...}` (measurements: nothing to map), with what they measure."""
    registry = load_registry() if registry is None else registry
    return {name: s.code.none for name, s in registry.items() if s.code is not None and s.code.none is not None}


@dataclasses.dataclass(frozen=True)
class Decision:
    pattern: str  # exact code or fnmatch pattern
    decision: str  # reference.DECISIONS
    note: str

    @property
    def is_pattern(self) -> bool:
        return any(ch in self.pattern for ch in "*?[")

    def matches(self, code: str) -> bool:
        return code == self.pattern or (self.is_pattern and fnmatch.fnmatchcase(code, self.pattern))


@functools.cache
def decisions(crosswalk: str) -> tuple[Decision, ...]:
    """Steward decisions for codes left out of `crosswalk` (reference/crosswalks/decisions/<crosswalk>.csv)."""
    df = reference.crosswalk_decisions(crosswalk)
    return tuple(Decision(*row) for row in df[reference.DECISION_COLUMNS].itertuples(index=False))


def decision_for(crosswalk: str, code: str | None) -> Decision | None:
    """The first recorded decision matching an unmapped code, or None when nobody decided."""
    if code is None:
        return None
    return next((d for d in decisions(crosswalk) if d.matches(code)), None)


def review_note(crosswalk: str, code: str | None) -> str | None:
    """The steward's decision for an unmapped code as one line (`<decision>: <note>`), or None."""
    found = decision_for(crosswalk, code)
    return f"{found.decision}: {found.note}" if found else None


_REGEX_META = set("\\.^$|?*+()[]{}")


def _escape(text: str) -> str:
    # Only the metacharacters: Rust's regex (Sail) rejects escapes such as "\ " that re.escape emits.
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in text)


def glob_regex(pattern: str) -> str:
    """An fnmatch pattern as an anchored regex without look-around (Sail's regex engine has none)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            out.append("[^" + _escape(body[1:]) + "]" if body.startswith("!") else "[" + _escape(body) + "]")
            i = j
        else:
            out.append(_escape(ch))
        i += 1
    return "^" + "".join(out) + "$"


# --- the code of each row ---------------------------------------------------------------------------


def _strip(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().fillna("")


def codes(df: pd.DataFrame, spec: CodeSpec) -> pd.Series:
    """The code of every row (object dtype; None where the row has no code)."""
    missing = [c for c in spec.input_columns if c not in df.columns]
    if missing:
        raise ValueError(f"crosswalk {spec.crosswalk}: column(s) {missing} not in the data {list(df.columns)}")
    index = df.index
    if spec.constant is not None:
        return pd.Series([spec.constant] * len(df), index=index, dtype=object)
    if spec.rules:
        numbers = {}
        for c in spec.input_columns:
            text = _strip(df[c])
            numbers[c] = pd.to_numeric(text.where(text.str.fullmatch(NUMBER)), errors="coerce")
        out = pd.Series([None] * len(df), index=index, dtype=object)
        decided = pd.Series(False, index=index)
        for rule in spec.rules:
            hit = ~decided & pd.concat([numbers[c] > 0 for c in rule.columns], axis=1).any(axis=1)
            out[hit] = rule.code
            decided |= hit
        if spec.default is not None:
            complete = pd.concat([numbers[c].notna() for c in spec.input_columns], axis=1).all(axis=1)
            out[~decided & complete] = spec.default
        return out
    parts = [_strip(df[c]) for c in spec.columns]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + SEPARATOR + part
    blank = pd.concat([p == "" for p in parts], axis=1).all(axis=1)
    if spec.normalize == "strip_decimal_zero":
        joined = joined.str.replace(r"^(-?[0-9]+)\.0+$", r"\1", regex=True)
    return joined.astype(object).where(~blank, None)


def spark_code(spec: CodeSpec, column: Callable | None = None):
    """The same rule as a Spark column. `column(name)` returns the Column of a delivered field: F.col by
    default (bronze), or e.g. `lambda c: F.get_json_object("record_json", f"$.{c}")` (quarantine)."""
    from pyspark.sql import functions as F

    col = column or F.col

    def text(name):
        trimmed = F.trim(col(name))
        return F.when(trimmed == "", None).otherwise(trimmed)

    if spec.constant is not None:
        return F.lit(spec.constant)
    if spec.rules:
        # rlike guard: Sail's cast fails on non-numbers instead of returning NULL
        number = {c: F.when(text(c).rlike(NUMBER), text(c).cast("double")) for c in spec.input_columns}
        out = None
        for rule in spec.rules:
            cond = F.lit(False)
            for c in rule.columns:  # NULL-safe OR: an empty or unparseable count is not positive
                cond = cond | F.coalesce(number[c] > 0, F.lit(False))
            out = F.when(cond, F.lit(rule.code)) if out is None else out.when(cond, F.lit(rule.code))
        if spec.default is not None:
            complete = None
            for c in spec.input_columns:
                complete = number[c].isNotNull() if complete is None else (complete & number[c].isNotNull())
            out = out.when(complete, F.lit(spec.default))
        return out
    parts = [text(c) for c in spec.columns]
    if len(parts) == 1:
        code = parts[0]
    else:
        any_part = None
        for p in parts:
            any_part = p.isNotNull() if any_part is None else (any_part | p.isNotNull())
        code = F.when(any_part, F.concat_ws(SEPARATOR, *[F.coalesce(p, F.lit("")) for p in parts]))
    if spec.normalize == "strip_decimal_zero":
        code = F.regexp_replace(code, r"^(-?[0-9]+)\.0+$", "$1")
    return code


# --- mapping statistics -----------------------------------------------------------------------------


@dataclasses.dataclass
class MappingStats:
    source: str
    crosswalk: str
    rows: int
    rows_with_code: int
    rows_mapped: int
    distinct_codes: int
    distinct_mapped: int
    unmapped: list[tuple[str, int]]  # (code, rows), most frequent first; EMPTY = rows without a code
    frequent_codes: int  # codes occurring >= FREQUENT times
    frequent_mapped: int
    # frequent codes neither mapped nor decided out_of_scope / unclassifiable (a gap or no decision)
    frequent_open: list[tuple[str, int]]
    by_subcategory: dict[str, int]
    rows_by_decision: dict[str, int]  # unmapped rows per decision ("undecided": none recorded)

    @property
    def mapping_rate(self) -> float:
        return self.rows_mapped / self.rows if self.rows else 1.0

    @property
    def coded_mapping_rate(self) -> float:
        """Mapped share of the rows that have a code at all."""
        return self.rows_mapped / self.rows_with_code if self.rows_with_code else 1.0

    @property
    def frequent_rate(self) -> float:
        """Share of codes occurring >= FREQUENT times that the crosswalk maps (1.0 when there are none)."""
        return self.frequent_mapped / self.frequent_codes if self.frequent_codes else 1.0

    @property
    def frequent_all_handled(self) -> bool:
        """Every code occurring >= FREQUENT times is mapped to a subcategory or decided out of scope /
        unclassifiable by a steward (the issue's bar for real code systems)."""
        return not self.frequent_open

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(
            mapping_rate=self.mapping_rate,
            coded_mapping_rate=self.coded_mapping_rate,
            frequent_all_handled=self.frequent_all_handled,
            frequent_rate=self.frequent_rate,
        )
        return out


def _frame(data, columns: list[str]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):  # pyarrow Table / RecordBatch (e.g. from deltalake)
        names = [c for c in columns if c in data.column_names]
        return data.select(names).to_pandas() if names else pd.DataFrame(index=range(data.num_rows))
    if isinstance(data, Mapping):
        return pd.DataFrame({c: data[c] for c in columns if c in data})
    raise TypeError(f"unsupported data type {type(data).__name__}: give a pandas DataFrame or pyarrow Table")


def mapping_stats(source, data, crosswalk: pd.DataFrame | None = None) -> MappingStats:
    """Coverage of `source`'s crosswalk over `data` (bronze rows or parsed files: pandas DataFrame,
    pyarrow Table, or a mapping of column name -> values)."""
    spec = required_spec(source)
    frame = _frame(data, spec.input_columns)
    xw = crosswalk if crosswalk is not None else reference.crosswalk(spec.crosswalk)
    target = dict(zip(xw["source_code"], xw["subcategory_code"]))
    found = codes(frame, spec)
    counts = collections.Counter(found.dropna().tolist())
    rows_with_code = sum(counts.values())
    mapped = {c: n for c, n in counts.items() if c in target}
    unmapped = sorted(((c, n) for c, n in counts.items() if c not in target), key=lambda x: (-x[1], x[0]))
    if len(frame) - rows_with_code:
        unmapped.append((EMPTY, len(frame) - rows_with_code))
        unmapped.sort(key=lambda x: (-x[1], x[0]))
    frequent = {c: n for c, n in counts.items() if n >= FREQUENT}
    by_sub: collections.Counter[str] = collections.Counter()
    for c, n in mapped.items():
        by_sub[target[c]] += n
    decided = {c: decision_for(spec.crosswalk, c) for c in counts if c not in target}
    by_decision: collections.Counter[str] = collections.Counter()
    for c, decision in decided.items():
        by_decision[decision.decision if decision else "undecided"] += counts[c]
    handled = ("out_of_scope", "unclassifiable")
    return MappingStats(
        source=source if isinstance(source, str) else source.name,
        crosswalk=spec.crosswalk,
        rows=len(frame),
        rows_with_code=rows_with_code,
        rows_mapped=sum(mapped.values()),
        distinct_codes=len(counts),
        distinct_mapped=len(mapped),
        unmapped=unmapped,
        frequent_codes=len(frequent),
        frequent_mapped=sum(c in target for c in frequent),
        frequent_open=sorted(
            (
                (c, n)
                for c, n in frequent.items()
                if c not in target and not (decided[c] and decided[c].decision in handled)
            ),
            key=lambda x: (-x[1], x[0]),
        ),
        by_subcategory=dict(sorted(by_sub.items(), key=lambda x: (-x[1], x[0]))),
        rows_by_decision=dict(sorted(by_decision.items())),
    )


# --- reading the data -------------------------------------------------------------------------------


def source_files(source, real_data_root: Path) -> list[Path]:
    cfg = source.connector
    folder = Path(cfg.path.format(real_data_root=real_data_root))
    found = folder.rglob(cfg.pattern) if cfg.recursive else folder.glob(cfg.pattern)
    return sorted(p for p in found if p.is_file())


def read_delivered(source, real_data_root: Path) -> pd.DataFrame:
    """The code columns of every delivered file of a real source, parsed by citysafe.formats (the same
    parser bronze uses, so renames apply and a malformed record is a row without a code)."""
    from citysafe import formats

    spec = required_spec(source)
    frames = []
    for path in source_files(source, real_data_root):
        parsed = formats.parse(path.name, path.read_bytes(), source)
        frames.append(pd.DataFrame({c: parsed.columns[c] for c in spec.input_columns}, index=range(parsed.rows)))
    if not frames:
        raise FileNotFoundError(
            f"{source.name}: no files matching {source.connector.pattern} under "
            f"{source.connector.path.format(real_data_root=real_data_root)}"
        )
    return pd.concat(frames, ignore_index=True)


def read_bronze(settings, source) -> pd.DataFrame:
    """The code columns of bronze.<source> (delta-rs, no Spark)."""
    from citysafe import delta_io

    spec = required_spec(source)
    table = delta_io.table_rows(
        delta_io.open_table(settings.bronze_dir / source.name), spec.input_columns or ["_batch_id"]
    )
    return table.to_pandas() if spec.input_columns else pd.DataFrame(index=range(table.num_rows))
