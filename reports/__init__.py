"""Quarterly risk reports for policy staff (HTML and PDF, English and Chinese).

snapshot.py   freeze the warehouse rows a quarter's report reads (and their provenance)
figures.py    every number of the report, computed from that snapshot by SQL
narrative.py  the sentences that say what drove each change (rules, both languages)
charts.py     maps and charts drawn locally with matplotlib (no tiles, Debian's CJK font)
render.py     Jinja2 -> HTML (self-contained) -> WeasyPrint PDF (fonts embedded, subset)
build.py      the command: `citysafe report --quarter 2025Q3 [--lang en|zh|all] [--district CODE]`
"""
