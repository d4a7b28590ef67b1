"""The report's words in English and Chinese, number formats, and the sentences generated from the figures.

Sentences are rules over the figures (which way a figure moved, what moved it most, whether a target is
met), never free text: the same figures always give the same sentences, in both languages.
"""

from __future__ import annotations

from citysafe.labels import DEVICE_TYPES_ZH

LANGS = ("en", "zh")

TEXT = {
    "en": {
        "title": "Quarterly city safety risk report",
        "district_title": "Quarterly safety risk report: {name}",
        "city_wide": "City-wide",
        "period": "{quarter} ({start} to {end})",
        "generated": "Made from the warehouse as frozen at {taken} (build {build})",
        "s_summary": "1. Summary",
        "s_risk": "2. Risk outlook",
        "s_trends": "3. Trends and forecasts",
        "s_hazards": "4. Hazard closed loop",
        "s_alerts": "5. Early warnings",
        "s_appendix": "6. Methods and data quality",
        "figure": "Figure",
        "value": "This quarter",
        "vs_previous": "vs previous quarter ({q})",
        "vs_year_before": "vs same quarter last year ({q})",
        "no_data": "No data for this section in this quarter.",
        "no_data_short": "no data",
        "kf_incidents": "Incidents",
        "kf_hazard_overdue_rate": "Hazard overdue rate",
        "kf_hazard_cycle_days": "Hazard cycle (median days found to rectified)",
        "kf_device_alerts": "Device alert episodes",
        "kf_response_minutes": "Fire/EMS median response time (minutes)",
        "by_domain": "Incidents by domain",
        "domain": "Domain",
        "district": "District",
        "cell": "H3 cell",
        "rank": "Rank",
        "level": "Level",
        "expected": "Expected incidents",
        "main_factor": "Main risk factor",
        "risk_intro": "Published risk for the week starting {week} ({method}): cells of the study area by risk level, "
        "with district outlines (no base map).",
        "levels": {"red": "red", "orange": "orange", "yellow": "yellow", "blue": "blue"},
        "level_counts": "Cells per level",
        "top20": "The 20 cells with the highest expected incidents",
        "actions": "Recommended actions",
        "scope": "Map",
        "scope_all": "All incidents",
        "driver": "Driver",
        "action": "Action",
        "cells_in": "Top cells in",
        "trend_intro": "Weekly incidents per domain over the last four quarters, and the newest forecast "
        "(P50 line, P10-P90 band) made from the week of {origin}.",
        "trend_no_forecast": "No forecast has been published yet.",
        "forecast_method": "Forecast method per measure: {methods}.",
        "hz_intro": "Hazards found in the quarter, as of {as_of}. Targets: overdue rate at most {rate}, "
        "median cycle at most {days} days.",
        "hazards": "Hazards",
        "overdue": "Overdue",
        "overdue_rate": "Overdue rate",
        "overdue_open": "Open past deadline",
        "median_days": "Median days",
        "target_met": "Target met",
        "yes": "yes",
        "no": "no",
        "enterprise": "Enterprise",
        "industry": "Industry",
        "top_enterprises": "Enterprises with the most overdue hazards",
        "sole_trader": "(sole trader)",
        "al_intro": "Device alert episodes that started in the quarter, by device type and peak grade.",
        "device_type": "Device type",
        "episodes": "Episodes",
        "longest": "The most severe and longest episodes",
        "alert": "Alert",
        "device": "Device",
        "started": "Started",
        "peak": "Peak",
        "hours": "Hours",
        "open": "open",
        "response_by_district": "Fire/EMS response time by district (minutes)",
        "calls": "Calls",
        "median": "Median",
        "p90": "P90",
        "bt_intro": "Hotspot models: mean PAI at 5% of the area over the rolling-origin backtest (higher is "
        "better; the published method is marked). Forecasts: mean MASE (below 1 beats last year's same "
        "week) and 80% interval coverage.",
        "method": "Method",
        "published": "Published",
        "measure": "Measure",
        "coverage": "80% coverage",
        "freshness": "Freshness and quarantine per source",
        "source": "Source",
        "status": "Status",
        "lag_hours": "Lag (h)",
        "rows_read": "Rows read",
        "quarantine_rate": "Quarantined",
        "top_reason": "Top reason",
        "gate": "Last gate",
        "provenance": "Provenance",
        "prov_warehouse": "Warehouse build",
        "prov_model_run": "Model run",
        "prov_generated": "Inputs frozen at",
        "prov_software": "Software",
        "prov_versions": "Delta table versions read",
        "measures": {"incidents": "incidents", "hazards_found": "hazards found"},
        # sentences
        "up": "rose",
        "down": "fell",
        "flat": "was unchanged",
        "say_change": "{what} {dir} {pct} ({abs}) on the previous quarter",
        "say_change_year": "and {dir} {pct} on the same quarter last year",
        "say_mover": "the largest change came from {domain} in {district} ({abs})",
        "say_no_previous": "{what}: {value}; the previous quarter has no data to compare with",
        "say_rate": "The hazard overdue rate was {rate} against a target of at most {target}: {verdict}",
        "say_rate_worst": "highest in {district} ({rate} of {n} hazards)",
        "say_days": "Hazards took a median {days} days from found to rectified (target at most {target}): {verdict}",
        "met": "target met",
        "not_met": "target not met",
        "say_alerts": "{n} device alert episodes started; {red} reached red, most of them on {type} devices",
        "say_alerts_none": "No device alert episode started in the quarter",
        "say_response": "Fire/EMS crews reached the scene in a median {minutes} minutes; slowest in {district} ({slow})",
    },
    "zh": {
        "title": "城市安全风险季度报告",
        "district_title": "安全风险季度报告：{name}",
        "city_wide": "全市",
        "period": "{quarter}（{start} 至 {end}）",
        "generated": "数据取自 {taken} 冻结的数据仓库（构建 {build}）",
        "s_summary": "一、概要",
        "s_risk": "二、风险研判",
        "s_trends": "三、趋势与预测",
        "s_hazards": "四、隐患整改闭环",
        "s_alerts": "五、预警",
        "s_appendix": "六、方法与数据质量",
        "figure": "指标",
        "value": "本季度",
        "vs_previous": "较上季度（{q}）",
        "vs_year_before": "较去年同期（{q}）",
        "no_data": "本季度此部分无数据。",
        "no_data_short": "无数据",
        "kf_incidents": "事件数",
        "kf_hazard_overdue_rate": "隐患逾期率",
        "kf_hazard_cycle_days": "隐患整改周期（发现至整改中位天数）",
        "kf_device_alerts": "设备告警次数",
        "kf_response_minutes": "消防/急救响应时间中位数（分钟）",
        "by_domain": "各领域事件数",
        "domain": "领域",
        "district": "区",
        "cell": "H3 网格",
        "rank": "排名",
        "level": "等级",
        "expected": "预计事件数",
        "main_factor": "主要风险因素",
        "risk_intro": "{week} 起一周的发布风险（{method}）：研究区各网格按风险等级着色，叠加区界（无底图）。",
        "levels": {"red": "红色", "orange": "橙色", "yellow": "黄色", "blue": "蓝色"},
        "level_counts": "各等级网格数",
        "top20": "预计事件数最高的 20 个网格",
        "actions": "建议措施",
        "scope": "图层",
        "scope_all": "全部事件",
        "driver": "驱动因素",
        "action": "措施",
        "cells_in": "重点网格所在区",
        "trend_intro": "近四个季度各领域每周事件数，以及基于 {origin} 当周数据的最新预测（P50 线，P10-P90 区间）。",
        "trend_no_forecast": "尚未发布预测。",
        "forecast_method": "各指标的预测方法：{methods}。",
        "hz_intro": "本季度发现的隐患，统计截至 {as_of}。目标：逾期率不高于 {rate}，整改周期中位数不超过 {days} 天。",
        "hazards": "隐患数",
        "overdue": "逾期",
        "overdue_rate": "逾期率",
        "overdue_open": "逾期未整改",
        "median_days": "中位天数",
        "target_met": "达标",
        "yes": "是",
        "no": "否",
        "enterprise": "企业",
        "industry": "行业",
        "top_enterprises": "逾期隐患最多的企业",
        "sole_trader": "（个体工商户）",
        "al_intro": "本季度开始的设备告警事件，按设备类型和最高等级统计。",
        "device_type": "设备类型",
        "episodes": "告警次数",
        "longest": "最严重、持续最久的告警",
        "alert": "告警",
        "device": "设备",
        "started": "开始",
        "peak": "峰值",
        "hours": "小时",
        "open": "未结束",
        "response_by_district": "各区消防/急救响应时间（分钟）",
        "calls": "出警数",
        "median": "中位数",
        "p90": "P90",
        "bt_intro": "热点模型：滚动起点回测中 5% 面积处的平均 PAI（越高越好，标出已发布方法）。"
        "预测：平均 MASE（低于 1 即优于去年同周）与 80% 区间覆盖率。",
        "method": "方法",
        "published": "已发布",
        "measure": "指标",
        "coverage": "80% 覆盖率",
        "freshness": "各数据源的时效与隔离情况",
        "source": "数据源",
        "status": "状态",
        "lag_hours": "延迟（小时）",
        "rows_read": "读取行数",
        "quarantine_rate": "隔离比例",
        "top_reason": "主要原因",
        "gate": "最近质检",
        "provenance": "数据来源",
        "prov_warehouse": "数据仓库构建",
        "prov_model_run": "模型运行",
        "prov_generated": "数据冻结时间",
        "prov_software": "软件版本",
        "prov_versions": "读取的 Delta 表版本",
        "measures": {"incidents": "事件", "hazards_found": "发现隐患"},
        "up": "上升",
        "down": "下降",
        "flat": "持平",
        "say_change": "{what}较上季度{dir}{pct}（{abs}）",
        "say_change_year": "较去年同期{dir}{pct}",
        "say_mover": "变化最大的是{district}{domain}（{abs}）",
        "say_no_previous": "{what}：{value}；上季度无数据可比",
        "say_rate": "隐患逾期率为 {rate}，目标为不高于 {target}：{verdict}",
        "say_rate_worst": "最高的是{district}（{n} 项隐患中 {rate}）",
        "say_days": "隐患从发现到整改的中位天数为 {days} 天（目标不超过 {target} 天）：{verdict}",
        "met": "达标",
        "not_met": "未达标",
        "say_alerts": "共发生 {n} 次设备告警，其中 {red} 次达到红色，最多来自{type}设备",
        "say_alerts_none": "本季度未发生设备告警",
        "say_response": "消防/急救到场时间中位数为 {minutes} 分钟；最慢的是{district}（{slow} 分钟）",
    },
}


def num(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    if digits == 0:
        return f"{round(value):,}"
    return f"{value:,.{digits}f}"


def pct(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def signed(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    text = num(abs(value), digits)
    return ("+" if value > 0 else "−" if value < 0 else "±") + text


def device_type(t: str | None, lang: str) -> str:
    if t is None:
        return "–"
    return DEVICE_TYPES_ZH.get(t, t) if lang == "zh" else t.replace("_", " ")


class Words:
    """Names and sentences in one language."""

    def __init__(self, lang: str, names: dict):
        self.lang = lang
        self.t = TEXT[lang]
        self.names = names

    def __getitem__(self, key: str):
        return self.t[key]

    def district(self, code) -> str:
        d = self.names["districts"].get(code)
        if d is None:
            return str(code) if code is not None else "–"
        return d[f"district_name_{self.lang}"] or code

    def domain(self, code) -> str:
        d = self.names["domains"].get(code)
        if d is None:
            return str(code) if code is not None else "–"
        return d[f"domain_name_{self.lang}"] or code

    def scope(self, scope: str) -> str:
        return self.t["scope_all"] if scope == "ALL" else self.domain(scope)

    def _dir(self, change) -> str:
        if change > 0:
            return self.t["up"]
        return self.t["down"] if change < 0 else self.t["flat"]

    # --- sentences ------------------------------------------------------------------------------------

    def incidents_sentence(self, kf: dict, mover: dict | None) -> str:
        what = self.t["kf_incidents"]
        if kf["value"] is None:
            return self.t["no_data"]
        if kf["vs_previous"] is None:
            return self.t["say_no_previous"].format(what=what, value=num(kf["value"])) + self._stop()
        ch = kf["vs_previous"]
        text = self.t["say_change"].format(
            what=what,
            dir=self._dir(ch["abs"]),
            pct=pct(abs(ch["pct"]) if ch["pct"] is not None else None),
            abs=signed(ch["abs"]),
        )
        if kf["vs_year_before"] is not None and kf["vs_year_before"]["pct"] is not None:
            y = kf["vs_year_before"]
            text += self._comma() + self.t["say_change_year"].format(dir=self._dir(y["abs"]), pct=pct(abs(y["pct"])))
        if mover is not None:
            text += self._semicolon() + self.t["say_mover"].format(
                domain=self.domain(mover["domain_code"]),
                district=self.district(mover["district_code"]),
                abs=signed(mover["change"]),
            )
        return text + self._stop()

    def hazard_sentences(self, rate_kf: dict, days_kf: dict, by_district: list[dict], targets: dict) -> list[str]:
        out = []
        if rate_kf["value"] is None:
            return [self.t["no_data"]]
        target = targets["hazard_overdue_rate_max"]
        verdict = self.t["met"] if rate_kf["value"] <= target else self.t["not_met"]
        text = self.t["say_rate"].format(rate=pct(rate_kf["value"]), target=pct(target, 0), verdict=verdict)
        ranked = [d for d in by_district if d["hazards"] >= 5 and d["district_code"]]
        if ranked and len(by_district) > 1:
            worst = max(ranked, key=lambda d: (d["overdue_rate"], d["hazards"]))
            text += self._semicolon() + self.t["say_rate_worst"].format(
                district=self.district(worst["district_code"]), rate=pct(worst["overdue_rate"]), n=worst["hazards"]
            )
        out.append(text + self._stop())
        if days_kf["value"] is not None:
            t = targets["hazard_days_to_rectify_max"]
            verdict = self.t["met"] if days_kf["value"] <= t else self.t["not_met"]
            out.append(
                self.t["say_days"].format(days=num(days_kf["value"], 1), target=num(t), verdict=verdict) + self._stop()
            )
        return out

    def alert_sentence(self, kf: dict, by_type_grade: list[dict]) -> str:
        if not kf["value"]:
            return self.t["say_alerts_none"] + self._stop()
        by_type: dict[str, int] = {}
        for r in by_type_grade:
            by_type[r["device_type"]] = by_type.get(r["device_type"], 0) + r["episodes"]
        top = max(sorted(by_type), key=lambda t: by_type[t])
        red = sum(r["episodes"] for r in by_type_grade if r["peak_grade"] == "red")
        return (
            self.t["say_alerts"].format(n=num(kf["value"]), red=num(red), type=device_type(top, self.lang))
            + self._stop()
        )

    def response_sentence(self, kf: dict, by_district: list[dict]) -> str:
        if kf["value"] is None:
            return self.t["no_data"]
        slow = by_district[0] if by_district else None
        return (
            self.t["say_response"].format(
                minutes=num(kf["value"], 1),
                district=self.district(slow["district_code"]) if slow else "–",
                slow=num(slow["median_minutes"], 1) if slow else "–",
            )
            + self._stop()
        )

    def _stop(self) -> str:
        return "。" if self.lang == "zh" else "."

    def _comma(self) -> str:
        return "，" if self.lang == "zh" else ", "

    def _semicolon(self) -> str:
        return "；" if self.lang == "zh" else "; "
