"""Which column(s) of each real public dataset hold its incident code, which crosswalk maps it, and
how well the crosswalk covers the data.

Declarative config (`CODE_SPECS`): per real source, the code is one of
  * one delivered column (Chicago `iucr`, Houston `offense`, SF `call_type`, FARS `harm_ev` ...);
  * several columns joined with `SEPARATOR` (NYC complaints: `complaint_type|descriptor`, because
    the type alone - "Housing and Buildings", "Public Safety" - names no incident);
  * a constant, when the publisher filtered the dataset on one offence and dropped the column
    (NYC vehicle thefts: CODE `offense_group == "motor vehicle theft"`);
  * the first matching `CountRule`, when the dataset states its outcome as counts rather than a code
    (NYPD collisions: killed > pedestrian injured > injured > no injury).
Codes are trimmed; `normalize="strip_decimal_zero"` turns FARS's float-formatted codes ("12.0") into
the codebook's ("12").

This dict is the interim home of the config: it moves into each source YAML's `silver` section (code
role + crosswalk) once the real sources get a silver path; `spark_code()` is the same rule as a Spark
column, for that job and for `spark_jobs.unmapped_codes`.

`REVIEWED` records the steward decision for codes deliberately left out of a crosswalk: a taxonomy
gap (the taxonomy has no subcategory for the offence; the proposed one is named) or out of scope (not
a safety incident). Those codes are still quarantined as `unmapped_code`; the note tells the steward
the code was looked at. `mapping_stats()` reports, per source: rows, rows with a mapped code, the
mapping rate, distinct codes, unmapped codes with counts, and the share of codes occurring at least
`FREQUENT` times that the crosswalk maps (and that are mapped or reviewed).
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import pandas as pd

from citysafe import reference

SEPARATOR = "|"        # joins the parts of a composite code (no part of a real code contains it)
FREQUENT = 10          # codes occurring at least this often must be mapped or reviewed
EMPTY = "(empty)"      # how a row without a code is shown (the silver jobs' detail uses the same text)
NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"   # a count rule reads only plain decimals (else: unknown)


@dataclasses.dataclass(frozen=True)
class CountRule:
    """Derived code: `code` when any of `columns` holds a number > 0."""

    code: str
    columns: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CodeSpec:
    crosswalk: str                                   # reference/crosswalks/<crosswalk>.csv
    columns: tuple[str, ...] = ()                    # delivered column(s) holding the code
    constant: str | None = None                      # the whole dataset is this one code
    rules: tuple[CountRule, ...] = ()                # derived code, first match wins
    default: str | None = None                       # rules: no rule matched and every count is a number
    normalize: Literal["none", "strip_decimal_zero"] = "none"
    label_columns: tuple[str, ...] = ()              # the dataset's own label of the code (documentation)
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


_NYPD_KILLED = ("number_of_persons_killed", "number_of_pedestrians_killed", "number_of_cyclist_killed",
                "number_of_motorist_killed")
_NYPD_INJURED = ("number_of_persons_injured", "number_of_cyclist_injured", "number_of_motorist_injured")

CODE_SPECS: dict[str, CodeSpec] = {
    "real_chicago_crimes": CodeSpec(
        "real_chicago_iucr", columns=("iucr",), label_columns=("primary_type", "description"),
        note="Illinois UCR code as delivered (leading zero dropped: 610, not 0610); finer than primary_type"),
    "real_houston_crime": CodeSpec("real_houston_offense", columns=("offense",)),
    "real_nyc_vehicle_thefts": CodeSpec(
        "real_nyc_vehicle_theft_offense", constant="motor vehicle theft",
        note="crimedata kept only CODE offense_group 'motor vehicle theft' and dropped the offence columns"),
    "real_nypd_collisions": CodeSpec(
        "real_nypd_collision_outcome",
        rules=(CountRule("PERSONS KILLED", _NYPD_KILLED),
               CountRule("PEDESTRIANS INJURED", ("number_of_pedestrians_injured",)),
               CountRule("PERSONS INJURED", _NYPD_INJURED + ("number_of_pedestrians_injured",))),
        default="NO INJURY",
        note="outcome from the delivered counts; contributing factors (58% 'Unspecified') and vehicle "
             "types describe cause and vehicles, not the incident"),
    "real_sf_fire_calls": CodeSpec("real_sf_fire_call_type", columns=("call_type",)),
    "real_fars_crashes": CodeSpec(
        "real_fars_harmful_event", columns=("harm_ev",), normalize="strip_decimal_zero",
        note="first harmful event; every FARS crash is fatal"),
    "real_nyc_constituent_complaints": CodeSpec(
        "real_nyc_complaint_category", columns=("complaint_type", "descriptor"),
        note="complaint_type|descriptor: the type alone names no incident"),
    "real_nyc_restaurant_violations": CodeSpec(
        "real_nyc_restaurant_violation", columns=("violation_code",),
        note="empty code = inspection without a violation (not an incident)"),
    "real_nyc_restaurant_violation_codes": CodeSpec(
        "real_nyc_restaurant_violation", columns=("violation_code",), label_columns=("violation_description",),
        note="the code list itself: coverage of the code book"),
}

# Real sources without incident codes (measurements): nothing to map.
NO_CODE_SYSTEM: dict[str, str] = {
    "real_beijing_air_quality": "air-quality readings",
    "real_macleish_orchard": "weather-station readings",
    "real_macleish_whately": "weather-station readings",
    "real_melbourne_pedestrians": "pedestrian counts",
    "real_weather_chicago_daily": "daily weather and ridership",
    "real_weather_cities_daily": "daily weather",
    "real_weather_nyc_hourly": "hourly weather",
    "real_weather_seattle_daily": "daily weather",
}

_THEFT_GAP = "gap: theft without a taxonomy subcategory (proposed PS0107 Other theft / 其他盗窃)"
_SEX_GAP = "gap: sexual offence (proposed PS0305 Sexual assault / 性侵害)"
_DAMAGE_GAP = "gap: criminal damage / vandalism / graffiti (proposed PS0505 Criminal damage / 故意损毁财物)"
_TRESPASS_GAP = "gap: trespass (proposed PS0506 Trespass / 非法侵入)"
_WEAPON_GAP = "gap: weapons offence (proposed PS08 Weapons / PS0801 Illegal weapons / 非法持有枪支管制器具)"
_THREAT_GAP = "gap: threats, harassment, stalking (proposed PS0306 Threats and harassment / 威胁骚扰)"
_FRAUD_GAP = "gap: fraud of another kind than telecom/online or contract/investment (proposed PS0403 Other fraud)"
_ADMIN = "out of scope: registration, licensing, parole or court-order offence (not a safety incident)"
_CHILD = "gap: offence against a child, perpetrator not stated (proposed PS0307 Child abuse and neglect)"
_NOISE_GAP = "gap: noise of unspecified source (proposed PO0105 Other noise)"
_CASEWORK = "out of scope: constituent casework (services, benefits, administration), not a safety incident"
_NOT_INCIDENT = "out of scope: request, permit or service matter, not a safety incident"
_AMBIGUOUS = "out of scope: descriptor too broad to tell the incident (several subcategories possible)"

# Steward decisions for codes left out of a crosswalk, by crosswalk: (code or fnmatch pattern, note).
# Listed: every unmapped code that occurs >= FREQUENT times in the full real data (2026 review), plus
# patterns for whole out-of-scope complaint types. A crosswalk entry always wins over a note.
REVIEWED: dict[str, tuple[tuple[str, str], ...]] = {
    "real_houston_offense": (
        ("theft", _THEFT_GAP),
        ("rape", _SEX_GAP),
    ),
    "real_chicago_iucr": (
        *((c, _THEFT_GAP) for c in ("810", "820", "850", "865", "890", "1220")),
        *((c, _SEX_GAP) for c in ("261", "263", "264", "265", "266", "271", "273", "275", "281", "291",
                                  "1562", "1563", "1565", "1566", "1570", "1581", "1585", "5004", "1544")),
        *((c, _DAMAGE_GAP) for c in ("1305", "1310", "1320", "1340", "1345", "1370")),
        *((c, _TRESPASS_GAP) for c in ("1330", "1335", "1350", "1360", "1365")),
        *((c, _WEAPON_GAP) for c in ("141A", "141B", "141C", "142B", "143A", "143B", "143C", "1460", "1477",
                                     "1478", "1479", "1480", "2900", "5007", "4860", "4740")),
        *((c, _THREAT_GAP) for c in ("2820", "2825", "2826", "2830", "580", "583", "584", "3960", "3970")),
        *((c, _FRAUD_GAP) for c in ("1110", "1120", "1121", "1122", "1130", "1140", "1170", "1185", "1195",
                                    "1200", "1205", "1210", "1235", "1240", "1245", "1261")),
        *((c, _CHILD) for c in ("1710", "1750", "1755", "1780", "1582", "1537", "1725", "1791")),
        *((c, _ADMIN) for c in ("4650", "4651", "5110", "5111", "5112", "5120", "5122", "5130", "5131", "5132",
                                "4625", "4386", "4389", "502P", "502R", "5011", "2210", "2220", "2250", "3710",
                                "3730", "3731", "3760", "3800", "5114", "585", "5073")),
        ("1020", "gap: arson - the burning object is not coded (no FE arson subcategory)"),
        ("1025", "gap: arson - the burning object is not coded (no FE arson subcategory)"),
        ("1090", "gap: arson - the burning object is not coded (no FE arson subcategory)"),
        ("470", "gap: reckless conduct endangering others (no PS subcategory)"),
        ("2850", "gap: bomb threat (proposed PS0306 Threats and harassment)"),
        ("2851", "gap: arson threat (proposed PS0306 Threats and harassment)"),
        ("501A", "gap: animal cruelty (no subcategory; PO0404 is stray/nuisance animals)"),
        ("5000", "out of scope: 'other crime against person', no offence named"),
        ("5001", "out of scope: 'other crime involving property', no offence named"),
        ("5002", "gap: vehicle offence of unnamed kind (TR02 lists drink driving, parking, red light only)"),
        ("502T", "gap: vehicle tampering (no subcategory)"),
    ),
    "real_sf_fire_call_type": (
        ("Other", "out of scope: 'Other' names no incident"),
        ("Industrial Accidents", "gap: industrial accident of unstated kind (PR05 subcategory unknown)"),
        ("Smoke Investigation (Outside)", "out of scope: investigation call, the incident is unknown"),
    ),
    "real_nyc_restaurant_violation": (
        *((f"15{c}", "out of scope: tobacco / smoke-free rule, not food safety") for c in "EHIJKLST"),
        *((f"16{c}", "out of scope: nutrition, labelling or calorie-posting rule") for c in "ABCEF"),
        *((f"20{c}", "out of scope: sign, poster or grade-card posting rule") for c in "ABDEF"),
        *((f"18{c}", "out of scope: permit display, Department order or document rule") for c in "BCDF"),
        ("07A", "out of scope: inspector obstructed (enforcement, not a hazard)"),
        ("22A", "out of scope: generic nuisance condition, no hazard named"),
        ("22F", "out of scope: no description in the code list (critical flag 'Not Applicable')"),
        ("22G", "out of scope: no description in the code list (critical flag 'Not Applicable')"),
        ("05B", "gap: harmful gas or vapour (CO) in a food establishment: neither a gas-supply leak nor hygiene"),
        ("99B", "out of scope: 'Other general violation', no hazard named"),
    ),
    "real_nyc_complaint_category": (
        *((f"{t}|*", _CASEWORK) for t in (
            "Aging", "Civil Service and Labor", "COVID-19", "Cultural Affairs", "Economy/Jobs", "Education",
            "Finance", "General Welfare", "Governmental Operations", "Human and Civil Rights", "Immigration",
            "Land Use and Zoning", "Legal Services", "Recovery and Resiliency", "Utilities", "Veterans Affairs",
            "Youth Services", "Consumer Affairs", "Consumer Complaints", "CIVIL AND HUMAN RIGHTS", "CONTRACTS",
            "CRIMINAL JUSTICE", "DOCUMENTATION", "HOSPITALS", "JUSTICE SYSTEM", "MENTAL HEALTH-DISABILITY-",
            "OVERSIGHT AND INVESTIGATI", "SMALL BUSINESS", "Please choose an issue...", "Select One",
            "@getxlate.Udf_Code_Genera")),
        ("*|", "out of scope: complaint type without descriptor, too broad to tell the incident"),
        ("|*", "out of scope: no complaint type"),
        ("FIRE AND EMERGENCY MANAGE|*", _AMBIGUOUS),
        ("Parks|*", "out of scope: park maintenance and permits (no fallen-tree or hazard descriptor)"),
        *((f"Environment|{d}", _NOT_INCIDENT) for d in (
            "Water and Sewage Bills", "Rain Barrel", "RAIN BARREL", "Environmental Control Board", "WATER LIEN",
            "Bioswales", "Green Markets", "SEWER PROJECT", "SEWER CONSTRUCTION")),
        ("Environment|Noise Level Measuring Request", _NOISE_GAP),
        ("Environment|NOISE POLLUTION", _NOISE_GAP),
        ("Environment|Open Hydrants", "gap: open fire hydrant (water misuse; no UL02 subcategory)"),
        ("Environment|SEWER MAIN BREAK", "gap: sewer pipe break (UL03 lists blockage, overflow, pump failure)"),
        *((f"Health|{d}", _NOT_INCIDENT) for d in (
            "Hospital Facility or Clinic", "Disability Services", "Affordable Care Act", "Mental Health",
            "Birth Certificates", "Flu Shots", "Death Certificates", "Immunization Walk - In Clinics", "COVID-19",
            "Child Care Center", "Asthma", "Health Bucks", "EMS Personnel", "MH", "Dog License", "HIV/Aids",
            "AFFORDABLE HEALTH", "MEDICAL BILL", "ADDICTION / DETOX")),
        ("Health|Animal Care/Wild Animal", _AMBIGUOUS + " (stray animal PO0404 or wildlife NH0502)"),
        *((f"Housing and Buildings|{d}", "out of scope: housing casework (tenancy, programmes, "
                                         "applications, building administration)") for d in (
            "Seeking an affordable housing/apartment", "Lease Issue", "Landlord/Managing Agent Issues",
            "NYCHA Misc.", "Section 8", "Eviction", "NYCHA New Application", "HPD Housing Lottery",
            "Senior Housing", "NYCHA Transfers", "Rent Increases", "Rental Arrears", "Rent Stabilization",
            "DOB Permits", "Accessibility", "Tenant Harassment", "Rent Overcharges", "Rent Control", "HPD Lottery",
            "Mitchell-Lama", "NYCHA Eviction", "Succession Rights", "Supportive Housing", "LANDLORD/TENANT",
            "Housing Discrimination", "Foreclosure", "Certificate of Occupancy", "NYCHA Appeals",
            "NYCHA Annual Inspection", "SRO", "HOUSING DEVELOPMENT FUND CORPORATION COOPERATIVES (HDFC)",
            "HOUSING MISC", "Property Lines", "ONE SHOT", "CO-OP", "ERAP", "LRAP", "CITYFHEPS", "TIL Program",
            "APPLICATION STATUS", "ONE SHOT DEAL PROGRAM", "HOUSING STATUS",
            "Request for Housing Related Legal Assistance", "HARASSMENT", "CONDO", "Housing", "HPD Housing List",
            "Illegal Hotel", "Squatters", "Cell Phone Towers", "Stalled Sites", "Inspections", "Violation",
            "Vacate Order", "Rent Reductions")),
        *((f"Housing and Buildings|{d}", "out of scope: apartment condition or repair request (no taxonomy "
                                         "subcategory for housing conditions)") for d in (
            "NYCHA Building Maintenance", "Building Maintenance", "Construction General", "Repair Assistance",
            "Maintenance", "Emergency Repairs", "Abandoned Building", "Unsanitary Condition", "Bed Bugs", "Mold",
            "HPD-owned Building Condition", "Hoarding", "Lead Paint", "HVAC", "Window Guards", "HOUSING CONDITIONS",
            "NYCHA REPAIRS", "Scaffolding", "NYCHA Safety and Security")),
        ("Housing and Buildings|Gas", _AMBIGUOUS + " (gas leak UL0101 or supply interruption UL0102)"),
        ("Housing and Buildings|Electricity", _AMBIGUOUS + " (power outage UL0401 or wiring PR0504)"),
        *((f"Public Safety|{d}", "out of scope: police/fire administration or policy casework") for d in (
            "Police Precinct", "Community Policing", "NYPD Personnel", "Fire/EMS Allocation of Resources",
            "Justice System", "Police Harassment", "CCRB", "Corrections", "Crossing Guard",
            "Fire Dept. Building Inspection", "Parade and Protest Permit", "Homeland Security/Counterterrorism",
            "FDNY Minority and Women Recruitment and Retention", "Costs for Ambulance Services",
            "Public Housing Policing", "Truck Enforcement", "Adult Use Establishment")),
        ("Public Safety|Loitering", "gap: loitering (no subcategory; PO0401 is crowd gathering)"),
        ("Public Safety|Gangs/Youth Crimes", _AMBIGUOUS),
        ("Public Safety|Drag Racing", "gap: street racing / speeding (proposed TR0204 Speeding and racing)"),
        ("Public Safety|Hate Crimes", _AMBIGUOUS),
        ("Public Safety|Fireworks", "gap: illegal fireworks use (FE0403 is a fireworks accident)"),
        ("Public Safety|Bar or Nightclub Issue", _AMBIGUOUS),
        ("Public Safety|Drinking Outside", "gap: public drinking (no subcategory)"),
        ("Public Safety|OFFENSIVE CONDUCT", _AMBIGUOUS),
        ("Public Safety|HARASSMENT/BULLYING", _THREAT_GAP),
        ("Public Safety|HARASSMENT", _THREAT_GAP),
        ("Public Safety|CAR ACCIDENT", "gap: collision of unknown severity (TR01 is split by severity)"),
        ("Public Safety|PROPERTY DAMAGE", _DAMAGE_GAP),
        ("Public Safety|VANDALISM", _DAMAGE_GAP),
        ("Public Safety|FRAUD", _FRAUD_GAP),
        ("Quality of Life|Noise - Other", _NOISE_GAP),
        ("Quality of Life|Graffiti", _DAMAGE_GAP),
        ("Quality of Life|Panhandling", "gap: panhandling (no subcategory)"),
        ("Quality of Life|Film Crews", _NOT_INCIDENT),
        ("Quality of Life|Smoking", "out of scope: smoking complaint (tobacco control)"),
        ("Quality of Life|Adult Establishment", _NOT_INCIDENT),
        ("Quality of Life|QOL", _AMBIGUOUS),
        *((f"Sanitation|{d}", _NOT_INCIDENT) for d in (
            "Recycling", "E-Waste Pickups", "E-WASTE PICKUPS", "Litter Basket Requests", "Composting",
            "Private Carters", "SANITATION SUMMONS/NOTICE", "SPECIAL WASTE", "E-WASTE", "Clothing Bin Removal Request",
            "SPECIAL WASTE DISPOSAL", "CFC Recovery", "TICKETS")),
        ("Sanitation|Snow Removal", "gap: uncleared snow (service request; NH0304 is the weather event)"),
        ("Sanitation|Pigeons", "gap: nuisance birds (PO0404 is stray animals)"),
        *((f"Transportation|{d}", _NOT_INCIDENT) for d in (
            "Bicycles", "Street Signs", "Parking Restrictions", "Buses", "Speed Bump Request", "Parking Permits",
            "Access-A-Ride", "Subways", "Stop Sign", "Parking Signs", "Bus Shelter/Stop", "Street Markings",
            "Metrocard: Reduced Fare", "Carriage Horses", "DOT Street Construction Permit", "Citibikes", "Metrocard",
            "Vision Zero", "Parking Meters", "Curb Cuts", "For Hire Vehicle", "Speed Camera", "General Taxi Complaint",
            "Station Maintenance", "Street Renaming", "Road Median", "Taxi Fare Complaint", "Street Event Permits",
            "Request from Taxi Operator", "Senior Transportation", "Red Light Cameras", "City Bench", "Ferry",
            "Capital Projects: 7 Subway Extension", "Capital Projects: 2nd Avenue Subway", "Consumer Affairs",
            "Bus Depots", "BIKE LANES", "DOT STREET CONSTRUCTION PERMIT", "Tree guards", "FOR HIRE VEHICLE",
            "Token Booth", "SPEED CAMERA", "TLC", "FAIR FARES", "Capital Projects: East Side Access",
            "Driving Instructor", "OUTDOOR DINING", "Staten Island Ferry", "E-Z PASS", "Public Infrastructure",
            "BOLLARDS", "SELECTIVE BUS SERVICE", "Accessible Taxi Request")),
        ("Transportation|Traffic Signals", _AMBIGUOUS + " (signal failure TR0303 or a request for a new signal)"),
        ("Transportation|Street Lights", "gap: street lighting fault (no subcategory)"),
        ("Transportation|Pedestrian Safety", _AMBIGUOUS),
        ("Transportation|Traffic Enforcement", _AMBIGUOUS),
        ("Transportation|Bridge", _AMBIGUOUS),
    ),
}


def review_note(crosswalk: str, code: str | None) -> str | None:
    """The steward's recorded decision for an unmapped code, or None when nobody reviewed it."""
    if code is None:
        return None
    for pattern, note in REVIEWED.get(crosswalk, ()):
        if code == pattern or (any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(code, pattern)):
            return note
    return None


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
    unmapped: list[tuple[str, int]]            # (code, rows), most frequent first; EMPTY = rows without a code
    frequent_codes: int                        # codes occurring >= FREQUENT times
    frequent_mapped: int
    frequent_unreviewed: list[tuple[str, int]]  # frequent, unmapped and without a REVIEWED note
    by_subcategory: dict[str, int]

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
    def frequent_reviewed_rate(self) -> float:
        """Share of frequent codes that are mapped or carry a steward decision."""
        if not self.frequent_codes:
            return 1.0
        return (self.frequent_codes - len(self.frequent_unreviewed)) / self.frequent_codes

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(mapping_rate=self.mapping_rate, coded_mapping_rate=self.coded_mapping_rate,
                   frequent_rate=self.frequent_rate, frequent_reviewed_rate=self.frequent_reviewed_rate)
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


def mapping_stats(source: str, data, crosswalk: pd.DataFrame | None = None) -> MappingStats:
    """Coverage of `source`'s crosswalk over `data` (bronze rows or parsed files: pandas DataFrame,
    pyarrow Table, or a mapping of column name -> values)."""
    spec = CODE_SPECS[source]
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
    return MappingStats(
        source=source, crosswalk=spec.crosswalk, rows=len(frame), rows_with_code=rows_with_code,
        rows_mapped=sum(mapped.values()), distinct_codes=len(counts), distinct_mapped=len(mapped),
        unmapped=unmapped, frequent_codes=len(frequent), frequent_mapped=sum(c in target for c in frequent),
        frequent_unreviewed=sorted(((c, n) for c, n in frequent.items()
                                    if c not in target and review_note(spec.crosswalk, c) is None),
                                   key=lambda x: (-x[1], x[0])),
        by_subcategory=dict(sorted(by_sub.items(), key=lambda x: (-x[1], x[0]))),
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

    spec = CODE_SPECS[source.name]
    frames = []
    for path in source_files(source, real_data_root):
        parsed = formats.parse(path.name, path.read_bytes(), source)
        frames.append(pd.DataFrame({c: parsed.columns[c] for c in spec.input_columns}, index=range(parsed.rows)))
    if not frames:
        raise FileNotFoundError(f"{source.name}: no files matching {source.connector.pattern} under "
                                f"{source.connector.path.format(real_data_root=real_data_root)}")
    return pd.concat(frames, ignore_index=True)


def read_bronze(settings, source) -> pd.DataFrame:
    """The code columns of bronze.<source> (delta-rs, no Spark)."""
    from deltalake import DeltaTable

    spec = CODE_SPECS[source.name]
    table = DeltaTable(str(settings.bronze_dir / source.name)).to_pyarrow_table(
        columns=spec.input_columns or ["_batch_id"])
    return table.to_pandas() if spec.input_columns else pd.DataFrame(index=range(table.num_rows))
