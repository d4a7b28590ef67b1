"""Rule/keyword classifier: a free-text category (Chinese or English) -> taxonomy subcategory + confidence.

The rules are reference data, reviewed and versioned like the crosswalks:
`reference/classifiers/<name>.csv` with the columns

    pattern, language (zh|en), match (exact|contains), subcategory_code, weight (0..1], since, note

* `exact` rules match the whole normalised text (a department's own label; the reviewed label list of
  the code book). An exact rule with an EMPTY subcategory_code marks a known catch-all label
  ("其他", "Other", "咨询类" ...) that has no taxonomy counterpart: the classifier is sure there is
  nothing to map (the job quarantines it as `unmapped_code`).
* `contains` rules are keywords: Chinese ones match as substrings (spaces ignored), English ones as
  whole words (a plural s/es is accepted).
* `since` is the rule-set version that introduced the rule; `RuleSet.version` is the highest one.

Decision (pure, deterministic, no randomness, no dict-order dependence):
1. normalise (NFKC, lower case; separators such as - _ / · , : and brackets become spaces);
2. an exact rule on the normalised key (separators and spaces removed) wins with its weight;
3. otherwise every keyword occurrence is found; an occurrence lying inside a longer occurrence of the
   same language is dropped ("gas" inside "gas smell", "路面" inside "路面塌陷"); the remaining evidence
   per subcategory is combined by noisy-OR, s = 1 - prod(1 - w);
4. best = highest s (ties: smaller subcategory code); confidence = s1 * s1 / (s1 + s2), where s2 is the
   runner-up (0 if none): a lone keyword keeps its weight, competing evidence lowers it;
5. no rule matched: (None, 0.0).

The job publishes the subcategory only when confidence >= the source's `min_confidence` (declared in
its YAML); below that, the row is not guessed but goes to the steward review queue (`needs_review`)
with the best guess in the detail.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from pathlib import Path

import pandas as pd

from citysafe.config import REPO_ROOT
from citysafe.errors import ConfigurationError

CLASSIFIER_DIR = REPO_ROOT / "reference" / "classifiers"
RULE_COLUMNS = ["pattern", "language", "match", "subcategory_code", "weight", "since", "note"]
LANGUAGES = ("zh", "en")
MATCHES = ("exact", "contains")

_SEPARATORS = re.compile(r"[\s\-‐‑‒–—―_/\\|·・•,，、.。:：;；()（）\[\]【】<>《》\"'“”‘’!！?？~～+&]+")


class RuleError(ConfigurationError):
    pass


@dataclasses.dataclass(frozen=True)
class Result:
    subcategory_code: str | None  # None: a catch-all label (confidence 1.0) or nothing matched (0.0)
    confidence: float
    rule: str  # which rule(s) decided, for the steward


def spaced(text: str) -> str:
    """NFKC, lower case, separators -> one space, trimmed."""
    return _SEPARATORS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def key(text: str) -> str:
    """The exact-match key: `spaced` without any space."""
    return spaced(text).replace(" ", "")


@dataclasses.dataclass(frozen=True)
class _Keyword:
    pattern: str  # as written in the file
    language: str
    subcategory_code: str
    weight: float
    regex: re.Pattern


@dataclasses.dataclass(frozen=True)
class RuleSet:
    """Compiled rules (picklable: shipped to the engine's Python with the UDF)."""

    name: str
    version: str
    exact: dict[str, tuple[str | None, float, str]]  # key -> (subcategory or None, weight, pattern)
    keywords: tuple[_Keyword, ...]

    def classify(self, text: str | None) -> Result:
        return classify(self, text)


def _keyword_regex(pattern: str, language: str) -> re.Pattern:
    if language == "zh":
        return re.compile(re.escape(key(pattern)))
    words = re.escape(spaced(pattern)).replace(r"\ ", " ")
    return re.compile(r"(?<![a-z0-9])" + words + r"(?:s|es)?(?![a-z0-9])")


def build(rules: pd.DataFrame, name: str = "rules", subcategories: set[str] | None = None) -> RuleSet:
    """Validate and compile a rules table; errors name the row (file line) and the field."""
    missing = [c for c in RULE_COLUMNS if c not in rules.columns]
    if missing:
        raise RuleError(f"{name}: missing column(s) {missing}")
    exact: dict[str, tuple[str | None, float, str]] = {}
    keywords: list[_Keyword] = []
    seen: set[tuple[str, str, str]] = set()
    versions = []
    for i, r in enumerate(rules.to_dict("records")):
        where = f"{name}: row {i + 2}"
        pattern = str(r["pattern"] or "").strip()
        language, match = str(r["language"]).strip(), str(r["match"]).strip()
        sub = str(r["subcategory_code"] or "").strip() or None
        if not pattern or not key(pattern):
            raise RuleError(f"{where}: empty pattern")
        if language not in LANGUAGES:
            raise RuleError(f"{where}: language {language!r} is not one of {LANGUAGES}")
        if match not in MATCHES:
            raise RuleError(f"{where}: match {match!r} is not one of {MATCHES}")
        try:
            weight = float(r["weight"])
        except (TypeError, ValueError):
            raise RuleError(f"{where}: weight {r['weight']!r} is not a number") from None
        if not 0 < weight <= 1:
            raise RuleError(f"{where}: weight {weight} outside (0, 1]")
        if sub is None and match != "exact":
            raise RuleError(f"{where}: only an exact rule may have an empty subcategory_code (catch-all label)")
        if sub is not None and subcategories is not None and sub not in subcategories:
            raise RuleError(f"{where}: subcategory_code {sub!r} is not in the taxonomy")
        ident = (match, language, key(pattern) if match == "exact" or language == "zh" else spaced(pattern))
        if ident in seen:
            raise RuleError(f"{where}: {match} rule {pattern!r} ({language}) appears twice")
        seen.add(ident)
        versions.append(str(r["since"]).strip())
        if match == "exact":
            k = key(pattern)
            if k in exact and exact[k][0] != sub:
                raise RuleError(f"{where}: exact pattern {pattern!r} conflicts with {exact[k][2]!r}")
            exact[k] = (sub, weight, pattern)
        else:
            keywords.append(_Keyword(pattern, language, sub, weight, _keyword_regex(pattern, language)))
    keywords.sort(key=lambda k: (k.language, k.pattern, k.subcategory_code))
    version = max(versions, key=lambda v: tuple(int(p) if p.isdigit() else 0 for p in v.split("."))) if versions else ""
    return RuleSet(name, version, exact, tuple(keywords))


@functools.cache
def load_rules(name: str, directory: Path = CLASSIFIER_DIR) -> RuleSet:
    """reference/classifiers/<name>.csv, checked against the taxonomy."""
    from citysafe import reference

    path = directory / f"{name}.csv"
    if not path.is_file():
        raise RuleError(f"classifier rules not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RuleError(f"{path}: not a readable UTF-8 rules CSV ({detail})") from None
    return build(df, str(path), set(reference.taxonomy()["subcategory_code"]))


def classify(rules: RuleSet, text: str | None) -> Result:
    """Pure function: one text -> Result (see the module docstring for the decision)."""
    if text is None or text != text or not key(str(text)):
        return Result(None, 0.0, "empty text")
    text = str(text)
    hit = rules.exact.get(key(text))
    if hit is not None:
        sub, weight, pattern = hit
        return Result(sub, round(weight, 4), f"exact:{pattern}")

    views = {"zh": key(text), "en": spaced(text)}
    found = []  # (language, start, end, keyword)
    for kw in rules.keywords:
        for m in kw.regex.finditer(views[kw.language]):
            found.append((kw.language, m.start(), m.end(), kw))
    kept = [
        f
        for f in found
        if not any(
            o is not f and o[0] == f[0] and o[1] <= f[1] and f[2] <= o[2] and (o[2] - o[1]) > (f[2] - f[1])
            for o in found
        )
    ]
    if not kept:
        return Result(None, 0.0, "no rule matched")
    evidence: dict[str, list[_Keyword]] = {}
    for _, _, _, kw in kept:
        group = evidence.setdefault(kw.subcategory_code, [])
        if kw not in group:  # a keyword counts once however often it occurs
            group.append(kw)
    scores = []
    for sub, kws in evidence.items():
        miss = 1.0
        for kw in kws:
            miss *= 1.0 - kw.weight
        scores.append((round(1.0 - miss, 6), sub, kws))
    scores.sort(key=lambda s: (-s[0], s[1]))
    s1, best, kws = scores[0]
    s2 = scores[1][0] if len(scores) > 1 else 0.0
    confidence = round(s1 * s1 / (s1 + s2), 4)
    rule = "contains:" + "+".join(sorted(k.pattern for k in kws))
    if len(scores) > 1:
        rule += f" (runner-up {scores[1][1]} {s2:.2f})"
    return Result(best, confidence, rule)


def classify_udf(rules: RuleSet):
    """pandas_udf: text -> struct<subcategory_code string, confidence double, rule string>."""
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    schema = StructType(
        [
            StructField("subcategory_code", StringType()),
            StructField("confidence", DoubleType()),
            StructField("rule", StringType()),
        ]
    )

    @pandas_udf(schema)
    def classify_text(texts: pd.Series) -> pd.DataFrame:
        results = [classify(rules, None if t is None or t != t else str(t)) for t in texts.tolist()]
        return pd.DataFrame(
            {
                "subcategory_code": pd.Series([r.subcategory_code for r in results], dtype=object),
                "confidence": pd.Series([r.confidence for r in results], dtype="float64"),
                "rule": pd.Series([r.rule for r in results], dtype=object),
            }
        )

    return classify_text
