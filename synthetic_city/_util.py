"""Shared helpers: seeded random streams, deterministic writers, fast time formatting."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
CODES_DIR = PACKAGE_DIR / "codes"
TAXONOMY_CSV = REPO_ROOT / "reference" / "taxonomy" / "taxonomy.csv"
POLICE_CROSSWALK_CSV = REPO_ROOT / "reference" / "crosswalks" / "police_offence_codes.csv"


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent, reproducible random stream per (seed, purpose): changing one department's
    draws never shifts another's."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(stream.encode("utf-8"))]))


def scaled_count(base: float, scale: float, days: int, minimum: int = 0) -> int:
    return max(minimum, int(round(base * scale * days / 365.0)))


def corruption_count(n: int, rate: float, minimum: int = 3) -> int:
    """Exact number of rows of one corruption kind: rate * n, at least `minimum` (small test scales),
    never more than 5 % of n."""
    k = int(round(rate * n))
    k = max(k, minimum)
    return int(min(k, max(1, n // 20)))


# ------------------------------------------------------------------------------------------ writing
def ensure_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    ensure_parent(path)
    path.write_bytes(data)


def csv_text(df: pd.DataFrame) -> str:
    # QUOTE_MINIMAL = RFC 4180 quoting (fields with separator, quote or newline are quoted, quotes doubled)
    return df.to_csv(index=False, lineterminator="\n", na_rep="")


def write_csv(path: Path, df: pd.DataFrame, encoding: str = "utf-8") -> None:
    write_bytes(path, csv_text(df).encode(encoding))


def gzip_bytes(data: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    # mtime=0 and no file name in the header: byte-identical output for identical input
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def write_csv_gz(path: Path, df: pd.DataFrame) -> None:
    write_bytes(path, gzip_bytes(csv_text(df).encode("utf-8")))


def json_text(obj) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: Path, obj) -> None:
    write_bytes(path, json_text(obj).encode("utf-8"))


# ------------------------------------------------------------------------------------------ bookkeeping
@dataclass
class SourceCounts:
    """Delivery bookkeeping of one source; `as_dict` is its entry in expected_counts.json."""

    files: int = 0
    rows_delivered: int = 0
    duplicates: int = 0
    published: int = 0
    published_without_cell: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)

    def check(self, name: str) -> None:
        total = self.duplicates + self.published + sum(self.quarantined.values())
        if total != self.rows_delivered:
            raise AssertionError(f"{name}: rows_delivered {self.rows_delivered} != {total}")

    def as_dict(self) -> dict:
        return {
            "files": int(self.files),
            "rows_delivered": int(self.rows_delivered),
            "duplicates": int(self.duplicates),
            "published": int(self.published),
            "published_without_cell": int(self.published_without_cell),
            "quarantined": {k: int(v) for k, v in sorted(self.quarantined.items())},
        }


# ------------------------------------------------------------------------------------------ time
class Clock:
    """The simulated window [start_date, start_date + days) in the city's time zone. All instants are
    int64 seconds since the Unix epoch (UTC)."""

    def __init__(self, start_date: date, days: int, timezone: str):
        self.tz_name = timezone
        self.tz = ZoneInfo(timezone)
        self.start_date = start_date
        self.days = int(days)
        self.dates = [start_date + timedelta(days=i) for i in range(self.days + 1)]
        # local midnight of every day (and of the day after the window) in UTC seconds
        self.day_start = np.array([self.local_midnight(d) for d in self.dates], dtype=np.int64)
        self.t0 = int(self.day_start[0])
        self.t1 = int(self.day_start[-1])
        self.doy = np.array([d.timetuple().tm_yday for d in self.dates[:-1]])
        self.dow = np.array([d.weekday() for d in self.dates[:-1]])  # Monday = 0
        first_monday = start_date - timedelta(days=start_date.weekday())
        self.week_of_day = np.array([(d - first_monday).days // 7 for d in self.dates[:-1]])
        self.n_weeks = int(self.week_of_day[-1]) + 1
        self.week_start_dates = [first_monday + timedelta(days=7 * k) for k in range(self.n_weeks + 1)]
        self.week_start = np.array([self.local_midnight(d) for d in self.week_start_dates], dtype=np.int64)
        # months touched by the window: list of (year, month)
        months = []
        for d in self.dates[:-1]:
            ym = (d.year, d.month)
            if not months or months[-1] != ym:
                months.append(ym)
        self.months = months
        self.month_start = np.array(
            [self.local_midnight(date(y, m, 1)) for y, m in months] + [self.local_midnight(_next_month(*months[-1]))],
            dtype=np.int64,
        )

    def local_midnight(self, d: date) -> int:
        return int(datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp())

    def local_seconds(self, utc: np.ndarray) -> np.ndarray:
        """Naive local wall-clock time as seconds since 1970-01-01 00:00 (local)."""
        utc = np.asarray(utc, dtype=np.int64)
        if len(utc) == 0:
            return utc.copy()
        idx = pd.to_datetime(utc, unit="s", utc=True).tz_convert(self.tz).tz_localize(None)
        return (idx.asi8 // 1_000_000_000).astype(np.int64)

    def month_index(self, utc: np.ndarray) -> np.ndarray:
        """Index into self.months of each instant's local month (instants must lie in the window)."""
        return np.searchsorted(self.month_start, np.asarray(utc, dtype=np.int64), side="right") - 1

    def day_index(self, utc: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.day_start, np.asarray(utc, dtype=np.int64), side="right") - 1

    def month_label(self, k: int) -> str:
        y, m = self.months[k]
        return f"{y:04d}-{m:02d}"


class DayClock(Clock):
    """The clock of one daily delivery: a one-day window whose only delivery period is the day itself,
    so the department generators name its file by the date (`police_incidents_2026-01-01.csv`) instead
    of by the month (`police_incidents_2026-01.csv`, which may already exist)."""

    def __init__(self, day: date, timezone: str):
        super().__init__(day, 1, timezone)

    def month_label(self, k: int) -> str:
        return self.start_date.isoformat()


def _next_month(y: int, m: int) -> date:
    return date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)


def _chars(sec: np.ndarray) -> np.ndarray:
    s = np.datetime_as_string(np.asarray(sec, dtype=np.int64).astype("datetime64[s]"), unit="s")
    s = s.astype("<U19")
    return s.view(np.uint32).reshape(-1, 19)


def _assemble(chars: np.ndarray, parts) -> np.ndarray:
    n = chars.shape[0]
    cols = []
    for p in parts:
        if isinstance(p, str):
            lit = np.array([ord(c) for c in p], dtype=np.uint32)
            cols.append(np.broadcast_to(lit, (n, len(p))))
        elif isinstance(p, np.ndarray):
            cols.append(p)
        else:
            cols.append(chars[:, p])
    out = np.ascontiguousarray(np.concatenate(cols, axis=1))
    return out.view(f"<U{out.shape[1]}").ravel()


def fmt_time(sec: np.ndarray, style: str, offset_s: np.ndarray | None = None) -> np.ndarray:
    """Format seconds (already in the wall clock wanted) in one of the delivery styles."""
    sec = np.asarray(sec, dtype=np.int64)
    if len(sec) == 0:
        return np.array([], dtype="<U1")
    c = _chars(sec)
    if style == "iso_space":  # 2025-01-05 14:22:07
        return _assemble(c, [slice(0, 10), " ", slice(11, 19)])
    if style == "slash_minute":  # 2025/01/05 14:22
        return _assemble(c, [slice(0, 4), "/", slice(5, 7), "/", slice(8, 10), " ", slice(11, 16)])
    if style == "iso_z":  # 2025-01-05T06:22:07Z (sec must be UTC)
        return _assemble(c, [slice(0, 19), "Z"])
    if style == "iso_t":  # 2025-01-05T14:22:07
        return _assemble(c, [slice(0, 19)])
    if style == "iso_offset":  # 2025-01-05T14:22:07+08:00 (sec local, offset_s per row)
        return _assemble(c, [slice(0, 19), _offset_chars(offset_s)])
    if style == "zh_minute":  # 2025年01月05日 14:22
        return _assemble(c, [slice(0, 4), "年", slice(5, 7), "月", slice(8, 10), "日 ", slice(11, 16)])
    if style == "date":  # 2025-01-05
        return _assemble(c, [slice(0, 10)])
    if style == "ymd":  # 20250105 (record numbers)
        return _assemble(c, [slice(0, 4), slice(5, 7), slice(8, 10)])
    if style == "zh_date":  # 2025年01月05日
        return _assemble(c, [slice(0, 4), "年", slice(5, 7), "月", slice(8, 10), "日"])
    if style == "slash_date":  # 2025/01/05
        return _assemble(c, [slice(0, 4), "/", slice(5, 7), "/", slice(8, 10)])
    raise ValueError(style)


def _offset_chars(offset_s: np.ndarray) -> np.ndarray:
    off = np.asarray(offset_s, dtype=np.int64)
    sign = np.where(off < 0, ord("-"), ord("+")).astype(np.uint32)
    a = np.abs(off)
    hh, mm = a // 3600, (a % 3600) // 60
    digits = lambda v: (v + ord("0")).astype(np.uint32)  # noqa: E731
    return np.stack(
        [
            sign,
            digits(hh // 10),
            digits(hh % 10),
            np.full(len(off), ord(":"), np.uint32),
            digits(mm // 10),
            digits(mm % 10),
        ],
        axis=1,
    )


def zfill(a: np.ndarray, width: int) -> np.ndarray:
    """np.char.zfill that also takes an empty array (a small day may have no row of a kind)."""
    return np.char.zfill(a, width) if len(a) else np.asarray(a, dtype=f"<U{width}")


def fmt_fixed(values: np.ndarray, decimals: int) -> list[str]:
    f = "{:." + str(decimals) + "f}"
    return [f.format(v) for v in np.asarray(values, dtype=np.float64).tolist()]


def choose_index(rng: np.random.Generator, weights, size: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(w), size=size, p=w / w.sum())


def disjoint_subsets(rng: np.random.Generator, candidates: np.ndarray, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Draw mutually exclusive random subsets (sorted) of `candidates` with the given sizes; sizes are
    shrunk in order if there are not enough candidates."""
    perm = rng.permutation(np.asarray(candidates))
    out, pos = {}, 0
    for name, k in sizes.items():
        k = max(0, min(int(k), len(perm) - pos))
        out[name] = np.sort(perm[pos : pos + k])
        pos += k
    return out
