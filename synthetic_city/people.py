"""Synthetic personal and business identifiers (all fictional): names, mobile numbers, resident ID
numbers with valid ISO 7064 MOD 11-2 check digits, unified social credit codes (GB 32100-2015),
legacy 15-digit registration numbers (GB/T 17710 MOD 11,10) and Chinese street addresses.
Every string here is GBK-encodable (the hotline department writes GBK)."""

from __future__ import annotations

import numpy as np

SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_SURNAME_W = np.linspace(3.0, 0.3, len(SURNAMES))
GIVEN_M = list("伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭宁龙林阳峰建国志文博晨昊然轩")
GIVEN_F = list("芳娜敏静丽艳娟霞燕玲婷雪慧琳颖倩洁欣悦佳怡梅兰红萍秀莉蓉璐瑶琴晶丹岚薇媛")
MOBILE_PREFIX = [
    "130",
    "131",
    "132",
    "133",
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "176",
    "177",
    "178",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "191",
    "198",
    "199",
]
# birth-place area codes for ID numbers: the city's districts plus other provinces (migrants)
OTHER_AREAS = [
    "420117",
    "420281",
    "421002",
    "420602",
    "422801",
    "430102",
    "410105",
    "360102",
    "500103",
    "510104",
    "440106",
    "320102",
    "330106",
    "110105",
    "310115",
    "340104",
    "370102",
    "610113",
]
ROADS = [
    "解放大道",
    "中山大道",
    "建设大道",
    "京汉大道",
    "沿江大道",
    "和平大道",
    "友谊大道",
    "青年路",
    "发展大道",
    "武珞路",
    "珞喻路",
    "中南路",
    "民主路",
    "胜利街",
    "黄鹤楼路",
    "汉阳大道",
    "鹦鹉大道",
    "龙阳大道",
    "江汉路",
    "航空路",
    "新华路",
    "唐家墩路",
    "后湖大道",
    "三阳路",
    "台北路",
    "香港路",
    "徐东大街",
    "欢乐大道",
    "工业大道",
    "和平街",
    "冶金大道",
    "团结大道",
    "光谷大道",
    "关山大道",
    "雄楚大道",
    "南湖大道",
    "文化大道",
    "江夏大道",
    "纸坊大街",
    "东湖路",
    "八一路",
    "卓刀泉路",
    "临江大道",
    "滨江路",
    "沿河大道",
    "晴川大道",
    "知音大道",
    "古田路",
    "长丰大道",
    "汉西路",
    "园林路",
    "白沙洲大道",
    "青菱路",
    "金融港路",
    "高新大道",
    "楚平路",
]
ESTATES = [
    "幸福家园",
    "锦绣华庭",
    "江景花园",
    "阳光小区",
    "绿地新都会",
    "万科城",
    "金色港湾",
    "百步亭花园",
    "丽岛花园",
    "东湖名居",
    "南湖花园",
    "汉阳人家",
    "水岸星城",
    "桂花苑",
    "翠微新城",
    "滨江苑",
    "和谐家园",
    "紫荆花园",
    "新华小区",
    "钢花村",
    "工人新村",
    "银杏苑",
    "书香门第",
    "长江明珠",
]
LANDMARKS = ["地铁站", "公交站", "菜市场", "中学", "小学", "人民医院", "购物中心", "公园", "加油站", "派出所", "超市"]
TRADE_WORDS = list("恒达鑫源华宇中天长江楚天汉江江城金山宏远盛达腾飞东方博雅瑞丰嘉禾永安顺发联合新兴光明")
ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
ID_CHECK = np.array(list("10X98765432"))
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28])
ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2])


def _digits_to_str(d: np.ndarray) -> np.ndarray:
    """(n, k) int array of digit values -> array of k-char strings."""
    codes = np.asarray(d, dtype=np.uint32) + ord("0")
    return np.ascontiguousarray(codes).view(f"<U{codes.shape[1]}").ravel()


def _chars_to_str(c: np.ndarray) -> np.ndarray:
    codes = np.ascontiguousarray(c.astype(np.uint32))
    return codes.view(f"<U{codes.shape[1]}").ravel()


def names(rng: np.random.Generator, n: int, female: np.ndarray | None = None) -> np.ndarray:
    if female is None:
        female = rng.random(n) < 0.5
    sur = np.array(SURNAMES)[rng.choice(len(SURNAMES), n, p=_SURNAME_W / _SURNAME_W.sum())]
    gm, gf = np.array(GIVEN_M), np.array(GIVEN_F)
    g1 = np.where(female, gf[rng.integers(0, len(gf), n)], gm[rng.integers(0, len(gm), n)])
    g2 = np.where(female, gf[rng.integers(0, len(gf), n)], gm[rng.integers(0, len(gm), n)])
    two = rng.random(n) < 0.7
    return np.where(two, np.char.add(np.char.add(sur, g1), g2), np.char.add(sur, g1)).astype(object)


def mobiles(rng: np.random.Generator, n: int) -> np.ndarray:
    pre = np.array(MOBILE_PREFIX)[rng.integers(0, len(MOBILE_PREFIX), n)]
    rest = _digits_to_str(rng.integers(0, 10, (n, 8)))
    return np.char.add(pre, rest).astype(object)


def id_check_char(first17: np.ndarray) -> np.ndarray:
    s = (np.asarray(first17) * ID_WEIGHTS).sum(axis=1) % 11
    return ID_CHECK[s]


def id_numbers(
    rng: np.random.Generator, n: int, area_codes: list[str], ref_year: int, female: np.ndarray
) -> np.ndarray:
    """18-character resident ID numbers: area + birth date (age 16-85) + sequence (odd = male)
    + ISO 7064 MOD 11-2 check character."""
    areas = list(area_codes) + OTHER_AREAS
    w = np.array([3.0] * len(area_codes) + [1.0] * len(OTHER_AREAS))
    area = np.array(areas)[rng.choice(len(areas), n, p=w / w.sum())]
    area_d = np.array([[int(ch) for ch in a] for a in area], dtype=np.int64).reshape(n, 6)
    age = rng.integers(16, 86, n)
    base = np.datetime64(f"{ref_year}-06-30") - (age * 365.25).astype("timedelta64[D]")
    birth = base - rng.integers(0, 365, n).astype("timedelta64[D]")
    ymd = np.datetime_as_string(birth, unit="D")
    b = np.array([[int(ch) for ch in s.replace("-", "")] for s in ymd], dtype=np.int64).reshape(n, 8)
    seq = rng.integers(0, 500, n) * 2 + np.where(female, 0, 1)  # 3rd digit parity = sex
    seq = np.clip(seq, 1, 999)
    sd = np.stack([seq // 100, (seq // 10) % 10, seq % 10], axis=1)
    first17 = np.concatenate([area_d, b, sd], axis=1)
    chk = id_check_char(first17)
    return np.char.add(_digits_to_str(first17), chk).astype(object)


def id_is_valid(s: str) -> bool:
    if len(s) != 18 or not s[:17].isdigit():
        return False
    d = np.array([int(c) for c in s[:17]])
    return str(ID_CHECK[(d * ID_WEIGHTS).sum() % 11]) == s[17].upper()


def _org_check(d8: np.ndarray) -> np.ndarray:
    c = 11 - (d8 * ORG_WEIGHTS).sum(axis=1) % 11
    return np.where(c == 10, 33, np.where(c == 11, 0, c))  # 33 = index of 'X' among 0-9A-Z


def credit_codes(rng: np.random.Generator, n: int, area_codes: np.ndarray, individual: np.ndarray) -> np.ndarray:
    """GB 32100-2015 unified social credit codes: '9' (market regulation) + '1' company / '2' individual
    business + 6-digit area + 9-char organisation code (GB 11714 check) + check character."""
    org8 = rng.integers(0, 10, (n, 8))
    org_chk = _org_check(org8)
    head = np.column_stack([np.full(n, 9), np.where(individual, 2, 1)])
    area_d = np.array([[int(ch) for ch in a] for a in area_codes], dtype=np.int64).reshape(n, 6)
    vals = np.concatenate([head, area_d, org8], axis=1)  # values 0-9, same as index in USCC_CHARS
    # organisation check char -> value in USCC alphabet ('X' is value 28 there)
    org_val = np.where(org_chk == 33, USCC_CHARS.index("X"), org_chk)
    vals17 = np.concatenate([vals, org_val[:, None]], axis=1)
    chk = (31 - (vals17 * USCC_WEIGHTS).sum(axis=1) % 31) % 31
    chars = np.array([ord(c) for c in USCC_CHARS], dtype=np.uint32)
    allv = np.concatenate([vals17, chk[:, None]], axis=1)
    return _chars_to_str(chars[allv]).astype(object)


def credit_code_is_valid(s: str) -> bool:
    if len(s) != 18 or any(c not in USCC_CHARS for c in s):
        return False
    v = np.array([USCC_CHARS.index(c) for c in s])
    return (31 - (v[:17] * USCC_WEIGHTS).sum() % 31) % 31 == v[17]


def corrupt_credit_code(rng: np.random.Generator, code: str) -> str:
    """Same code with a wrong check character."""
    v = USCC_CHARS.index(code[17])
    w = (v + 1 + int(rng.integers(0, 29))) % 31
    return code[:17] + USCC_CHARS[w]


def legacy_reg_numbers(rng: np.random.Generator, n: int, area_codes: np.ndarray) -> np.ndarray:
    """15-digit business registration numbers (pre-2015): area(6) + 1 + serial(7) + MOD 11,10 check."""
    area_d = np.array([[int(ch) for ch in a] for a in area_codes], dtype=np.int64).reshape(n, 6)
    body = np.concatenate([area_d, np.ones((n, 1), np.int64), rng.integers(0, 10, (n, 7))], axis=1)
    p = np.full(n, 10)
    for k in range(14):
        s = (p + body[:, k]) % 10
        s = np.where(s == 0, 10, s)
        p = (s * 2) % 11
    chk = (11 - p) % 10
    return _digits_to_str(np.concatenate([body, chk[:, None]], axis=1)).astype(object)


def legacy_reg_is_valid(s: str) -> bool:
    if len(s) != 15 or not s.isdigit():
        return False
    p = 10
    for ch in s[:14]:
        t = (p + int(ch)) % 10 or 10
        p = (t * 2) % 11
    return (p + int(s[14])) % 10 == 1


def addresses(
    rng: np.random.Generator, district_names_zh: np.ndarray, with_comma: float = 0.08, with_quote: float = 0.01
) -> np.ndarray:
    n = len(district_names_zh)
    road = np.array(ROADS)[rng.integers(0, len(ROADS), n)]
    num = rng.integers(1, 999, n).astype(str)
    est = np.array(ESTATES)[rng.integers(0, len(ESTATES), n)]
    bld = rng.integers(1, 30, n).astype(str)
    unit = rng.integers(1, 6, n).astype(str)
    lm = np.array(LANDMARKS)[rng.integers(0, len(LANDMARKS), n)]
    kind = rng.random(n)
    out = []
    for i in range(n):
        base = f"{district_names_zh[i]}{road[i]}{num[i]}号"
        k = kind[i]
        if k < 0.45:
            s = f"{base}{est[i]}{bld[i]}栋{unit[i]}单元"
        elif k < 0.7:
            s = base
        else:
            s = f"{base}{lm[i]}附近"
        out.append(s)
    out = np.array(out, dtype=object)
    r = rng.random(n)
    comma = r < with_comma
    out[comma] = [f"{a}, 靠近{b}" for a, b in zip(out[comma], lm[comma])]
    quote = (r >= with_comma) & (r < with_comma + with_quote)
    out[quote] = [f'{a}"{e}"门口' for a, e in zip(out[quote], est[quote])]
    return out


def enterprise_names(
    rng: np.random.Generator,
    n: int,
    industry_words: list[list[str]],
    industry_idx: np.ndarray,
    individual: np.ndarray,
    branch_of: np.ndarray,
) -> np.ndarray:
    """Canonical registered names: 江城(市)<trade><industry word>有限公司 with optional （XX分公司）."""
    tw = np.array(TRADE_WORDS)
    a = tw[rng.integers(0, len(tw), n)]
    b = tw[rng.integers(0, len(tw), n)]
    city = np.where(rng.random(n) < 0.6, "江城市", "江城")
    suffix = np.where(rng.random(n) < 0.15, "股份有限公司", "有限公司")
    latin = rng.random(n) < 0.05
    out = []
    for i in range(n):
        word = industry_words[industry_idx[i]][int(rng.integers(0, len(industry_words[industry_idx[i]])))]
        trade = a[i] + b[i]
        if latin[i]:
            trade = "ABCDEFGHKLMNPRSTXYZ"[i % 19] + "ABCDEFGHKLMNPRSTXYZ"[(i * 7 + 3) % 19]
        if individual[i]:
            out.append(f"江城市{trade}{word}店")
        else:
            nm = f"{city[i]}{trade}{word}{suffix[i]}"
            if branch_of[i]:
                nm += f"（{branch_of[i]}分公司）"
            out.append(nm)
    return np.array(out, dtype=object)


_FULLWIDTH = {ord(c): ord(c) + 0xFEE0 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}


def name_variant(rng: np.random.Generator, names_: np.ndarray) -> np.ndarray:
    """Spelling variants of registered names as other systems type them: half-width brackets,
    有限责任公司/有限公司, full-width Latin letters, stray spaces, dropped 市."""
    out = []
    r = rng.random(len(names_))
    for s, x in zip(names_, r):
        if x < 0.3:
            s = s.replace("（", "(").replace("）", ")")
        elif x < 0.5:
            s = s.replace("股份有限公司", "股份公司") if "股份" in s else s.replace("有限公司", "有限责任公司")
        elif x < 0.6:
            s = s.translate(_FULLWIDTH)
        elif x < 0.75:
            s = " " + s if x < 0.68 else s + " "
        elif x < 0.9:
            s = s.replace("江城市", "江城", 1)
        out.append(s)
    return np.array(out, dtype=object)
