"""Identifier validation, checked against the synthetic city's independent generator and known forms."""

from __future__ import annotations

import numpy as np
import pytest

from citysafe import identifiers as ids


def test_uscc_and_legacy_agree_with_the_generator():
    from synthetic_city import people

    rng = np.random.default_rng(3)
    codes = people.credit_codes(rng, 300, np.array(["420102"] * 300), np.zeros(300, dtype=bool))
    assert all(ids.uscc_is_valid(c) for c in codes)
    corrupted = [people.corrupt_credit_code(rng, c) for c in codes[:50]]
    assert not any(ids.uscc_is_valid(c) for c in corrupted)
    legacy = people.legacy_reg_numbers(rng, 300, np.array(["420102"] * 300))
    assert all(ids.legacy_reg_no_is_valid(n) for n in legacy)
    assert not any(ids.legacy_reg_no_is_valid(n[:14] + str((int(n[14]) + 1) % 10)) for n in legacy[:50])


def test_uscc_forms():
    code = "91420102" + "MA4K" + "0001" + "X"  # 17 characters, check computed below
    total = sum(ids.USCC_CHARS.index(c) * w for c, w in zip(code, ids._USCC_WEIGHTS))
    full = code + ids.USCC_CHARS[(31 - total % 31) % 31]
    assert ids.uscc_is_valid(full)
    assert ids.uscc_is_valid(" " + full.lower().replace("x", "ｘ") + " ")  # spaces, case, full width
    assert not ids.uscc_is_valid(full[:17] + ("0" if full[17] != "0" else "1"))
    assert not ids.uscc_is_valid(full.replace("M", "I"))  # I, O, S, V, Z are not in the alphabet
    assert not ids.uscc_is_valid(None) and not ids.uscc_is_valid("123")


@pytest.mark.parametrize(
    "number, valid",
    [
        ("11010519491231002X", True),  # the GB 11643 example
        ("110105194912310021", False),
        ("11010519491231002", False),
    ],
)
def test_resident_id(number, valid):
    assert ids.resident_id_is_valid(number) is valid


@pytest.mark.parametrize(
    "a, b",
    [
        ("江城市Ａ化工有限责任公司", "江城市A化工有限公司"),
        ("江城长江建材股份有限公司", "江城长江建材"),
        ("江城市宏达物流（集团）有限公司", "江城市宏达物流公司"),
        ("Jiangcheng Star Chemical Co., Ltd.", "JIANGCHENG STAR CHEMICAL"),
    ],
)
def test_enterprise_name_variants_match(a, b):
    assert ids.normalize_enterprise_name(a) == ids.normalize_enterprise_name(b)


def test_different_enterprises_stay_different():
    assert ids.normalize_enterprise_name("江城化工厂") != ids.normalize_enterprise_name("江城化肥厂")
