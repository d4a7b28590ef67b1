"""Chinese identifiers the departments use, validated and normalised without any lookup service.

- Unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters, check character MOD 31.
- Legacy business registration number (注册号, GB/T 17710 hybrid MOD 11,10): 15 digits.
- Resident ID number (居民身份证号码, GB 11643-1999): 18 characters, ISO 7064 MOD 11-2.
- Enterprise names: full/half width, punctuation, brackets and company-suffix variants removed for
  matching ("江城市Ａ化工有限责任公司" and "江城市A化工有限公司" match).
"""

from __future__ import annotations

import re
import unicodedata

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def normalize_code(value: str | None) -> str | None:
    if value is None:
        return None
    text = re.sub(r"[\s\-]", "", unicodedata.normalize("NFKC", value)).upper()
    return text or None


def uscc_is_valid(code: str | None) -> bool:
    code = normalize_code(code)
    if code is None or len(code) != 18 or any(c not in USCC_CHARS for c in code):
        return False
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(code[:17], _USCC_WEIGHTS))
    return USCC_CHARS[(31 - total % 31) % 31] == code[17]


def legacy_reg_no_is_valid(number: str | None) -> bool:
    """15-digit registration number with a GB/T 17710 (ISO 7064 hybrid MOD 11,10) check digit."""
    number = normalize_code(number)
    if number is None or not re.fullmatch(r"\d{15}", number):
        return False
    p = 10
    for digit in number[:14]:
        s = (p + int(digit)) % 10 or 10
        p = (s * 2) % 11
    return (11 - p) % 10 == int(number[14])


def resident_id_is_valid(number: str | None) -> bool:
    number = normalize_code(number)
    if number is None or not re.fullmatch(r"\d{17}[\dX]", number):
        return False
    return _ID_CHECK[sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS)) % 11] == number[17]


# Longest first, so "股份有限公司" is removed whole rather than leaving "股份".
_SUFFIXES = sorted(
    [
        "股份有限公司",
        "有限责任公司",
        "有限公司",
        "集团公司",
        "分公司",
        "总公司",
        "公司",
        "个体工商户",
        "厂",
        "店",
        "corporation",
        "company",
        "limited",
        "co.,ltd.",
        "co.,ltd",
        "co.ltd",
        "co.",
        " co",
        "ltd.",
        "ltd",
        "inc.",
        "inc",
        "corp.",
    ],
    key=len,
    reverse=True,
)
_PUNCT = re.compile(r"[\s\-_.,，。·・'\"“”‘’()（）\[\]【】<>《》/&、]")


def normalize_enterprise_name(name: str | None) -> str | None:
    """Matching key for an enterprise name: NFKC, lower case, bracketed notes and punctuation dropped,
    trailing company-type suffixes removed."""
    if name is None:
        return None
    text = unicodedata.normalize("NFKC", name).strip().lower()
    text = re.sub(r"[(（\[【][^)）\]】]*[)）\]】]", "", text)  # (集团), (江城) ... are not the name
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if text.endswith(suffix) and len(text) > len(suffix):
                text = text[: -len(suffix)].rstrip(" ,.")
                changed = True
    text = _PUNCT.sub("", text)
    return text or None
