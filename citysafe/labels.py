"""Display names shared by what people read (reports, alert messages): Chinese labels of codes."""

from __future__ import annotations

# The national four-colour warning scale, lowest first, and its Chinese names.
LEVELS = ("blue", "yellow", "orange", "red")
LEVELS_ZH = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}

DEVICE_TYPES_ZH = {
    "gas_pressure": "燃气压力",
    "rain_gauge": "雨量",
    "smoke": "烟感",
    "vibration": "振动",
    "water_level": "水位",
    "water_pressure": "水压",
    "temperature": "温度",
}

SEVERITY_ZH = {"major": "重大", "general": "一般"}


def level_rank(level: str) -> int:
    """1 (blue) .. 4 (red)."""
    return LEVELS.index(level) + 1
