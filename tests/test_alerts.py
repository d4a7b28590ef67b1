"""Early warning: rules as reference data, the alert lifecycle, routing, and delivery to real loopback
servers (an HTTP receiver for Apprise's json:// and an aiosmtpd SMTP server).

Acceptance on the built test city: device alerts sent = fct_device_alert episodes at or above the rule's
level; hazard reminders and escalations = what the generator's truth implies, exactly one each; running
again sends nothing twice and commits nothing; a backfill of an older hour changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections import Counter
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest
import yaml
from loopback_servers import HttpReceiver, SmtpReceiver

from alerts import conditions, lifecycle, notify, store
from alerts import run as alert_run
from alerts.rules import load_rules, parse_rules
from citysafe import delta_io
from citysafe.config import REPO_ROOT, AlertChannel, AlertsConfig, ConfigError, load_settings

UTC = dt.UTC
RULES_FILE = REPO_ROOT / "reference" / "alert_rules.yaml"


def T(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- rules and config ----------------------------------------------------------------------------------


def test_the_committed_rules_load():
    rules = parse_rules(yaml.safe_load(RULES_FILE.read_text()), "alert_rules.yaml")
    assert {r.condition for r in rules} == {"device_grade", "risk_level", "hazard_deadline", "source_freshness"}
    hazard = next(r for r in rules if r.condition == "hazard_deadline")
    assert hazard.params["remind_hours_before"] == 72


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r[0].update(condition="weather"), r"rule device_threshold: field condition: 'weather' is unknown"),
        (lambda r: r[0].update(min_level="purple"), r"rule device_threshold: field min_level: 'purple' is not a level"),
        (
            lambda r: r[2].pop("escalate_after_days_overdue"),
            r"rule hazard_deadline: field escalate_after_days_overdue is missing",
        ),
        (lambda r: r[2]["levels"].update(overdue="blue"), r"field levels: levels must not decrease"),
        (
            lambda r: r[1]["what"].update(en="{nowhere}"),
            r"rule risk_cell_red: field what.en: unknown placeholder \{nowhere\}",
        ),
        (lambda r: r[3]["action"].pop("zh"), r"rule source_stale: field action: needs an `en` and a `zh` text"),
        (lambda r: r[3].update(id="device_threshold"), r"rule device_threshold: field id: duplicate rule id"),
    ],
)
def test_bad_rules_are_refused_naming_file_rule_and_field(change, message):
    data = yaml.safe_load(RULES_FILE.read_text())
    change(data["rules"])
    with pytest.raises(ConfigError, match=message) as err:
        parse_rules(data, "reference/alert_rules.yaml")
    assert str(err.value).startswith("reference/alert_rules.yaml: rule ") and "\n" not in str(err.value)


def test_channel_urls_hold_no_literal_secret():
    with pytest.raises(ValueError, match="must not hold a password"):
        AlertChannel(name="mail", url="mailto://duty:hunter2@mail.example?to=a@b.c")
    AlertChannel(name="mail", url="mailto://duty:${SMTP_PASSWORD}@mail.example?to=a@b.c")
    with pytest.raises(ConfigError, match="environment variable CITYSAFE_TEST_UNSET_KEY is not set"):
        notify.resolve_url(AlertChannel(name="bot", url="wecombot://${CITYSAFE_TEST_UNSET_KEY}"), REPO_ROOT)


def test_routing_by_district_and_level_and_red_goes_to_every_channel():
    channels = (
        AlertChannel(name="city", url="json://x", min_level="orange"),
        AlertChannel(name="d1", url="json://y", districts=("D1",), min_level="yellow"),
        AlertChannel(name="d2", url="json://z", districts=("D2",), min_level="blue"),
    )
    names = lambda level, district: [c.name for c in notify.route(level, district, channels)]  # noqa: E731
    assert names("blue", "D1") == []
    assert names("yellow", "D1") == ["d1"]
    assert names("blue", "D2") == ["d2"]
    assert names("orange", "D1") == ["city", "d1"]
    assert names("orange", None) == ["city"]  # city-wide subjects: channels taking all districts
    assert names("red", "D3") == ["city", "d1", "d2"]
    assert names("red", None) == ["city", "d1", "d2"]


# --- conditions and lifecycle (pure) -------------------------------------------------------------------


def _hazard_episodes(rows: list[dict]) -> dict[str, conditions.Episode]:
    frame = pd.DataFrame(rows)
    for col in ("found_date", "rectify_deadline", "closed_date"):
        frame[col] = pd.to_datetime(frame[col]).dt.date
    for col in ("enterprise_id", "district_code", "h3_cell"):
        frame[col] = "x"
    frame["severity"] = "major"
    rule = next(r for r in load_rules(load_settings()) if r.condition == "hazard_deadline")
    con = duckdb.connect()
    con.register("fct_hazard", frame)
    return {e.subject_id: e for e in conditions.hazard_deadline(con, rule, ZoneInfo("Asia/Shanghai"))}


def test_hazard_deadline_stages_in_city_time():
    eps = _hazard_episodes(
        [
            # deadline 2025-03-10: its day ends 03-11 00:00 local = 03-10 16:00 UTC; reminder 72 h before
            {"hazard_id": "open", "found_date": "2025-03-01", "rectify_deadline": "2025-03-10", "closed_date": None},
            {
                "hazard_id": "on_time",
                "found_date": "2025-03-01",
                "rectify_deadline": "2025-03-10",
                "closed_date": "2025-03-09",
            },
            {
                "hazard_id": "early",
                "found_date": "2025-03-01",
                "rectify_deadline": "2025-03-10",
                "closed_date": "2025-03-08",
            },
            {"hazard_id": "short", "found_date": "2025-03-09", "rectify_deadline": "2025-03-10", "closed_date": None},
            {
                "hazard_id": "late_find",
                "found_date": "2025-03-12",
                "rectify_deadline": "2025-03-10",
                "closed_date": None,
            },
        ]
    )
    assert eps["open"].steps == (
        (T("2025-03-07T16:00"), "yellow"),
        (T("2025-03-10T16:00"), "orange"),
        (T("2025-03-17T16:00"), "red"),
    )
    assert eps["open"].stage_names == ("reminder", "overdue", "long_overdue") and eps["open"].resolved_at is None
    assert eps["on_time"].steps == ((T("2025-03-07T16:00"), "yellow"),)
    assert eps["on_time"].resolved_at == T("2025-03-08T16:00")
    assert "early" not in eps  # closed by its reminder time (03-08 00:00 local): nobody needed reminding
    assert eps["short"].steps[0] == (T("2025-03-08T16:00"), "yellow")  # reminded when found
    assert eps["late_find"].stage_names == ("overdue", "long_overdue")  # found after its deadline: no reminder


def test_a_source_past_its_error_freshness_opens_and_a_new_load_closes_it():
    rule = next(r for r in load_rules(load_settings()) if r.condition == "source_freshness")
    con = duckdb.connect()
    loads = pd.DataFrame(
        {
            "source": ["police", "devices", "never"],
            "department": ["police", "iot", "x"],
            "last_loaded_at_utc": pd.to_datetime(["2025-01-01T00:00Z", "2025-01-03T00:00Z", None], utc=True),
            "freshness_error_after_hours": [72, 72, 72],
        }
    )
    con.register("mart_source_freshness", loads)
    eps = conditions.source_freshness(con, rule, ZoneInfo("UTC"), T("2025-01-05T00:00"))
    assert [(e.subject_id, e.opened_at, e.steps[0][1]) for e in eps] == [("police", T("2025-01-04T00:00"), "orange")]
    assert eps[0].evidence["lag_hours"] == "96" and eps[0].district_code is None
    rows, _ = lifecycle.advance({}, eps, T("2025-01-05T00:00"), {rule.id})
    stored = {r["alert_id"]: r for r in rows}
    loads.loc[0, "last_loaded_at_utc"] = pd.Timestamp("2025-01-05T01:00Z")  # the police delivery arrived
    con.register("mart_source_freshness", loads)
    assert conditions.source_freshness(con, rule, ZoneInfo("UTC"), T("2025-01-05T02:00")) == []
    closed, counts = lifecycle.advance(stored, [], T("2025-01-05T02:00"), {rule.id})
    assert counts["resolved"] == 1 and closed[0]["status"] == "resolved"


def _episode(steps, resolved=None, subject="D-1"):
    return conditions.Episode("r", "device", subject, "D1", None, tuple(steps), resolved_at=resolved, evidence={"x": 1})


def test_lifecycle_advances_once_and_never_moves_back():
    ep = _episode([(T("2025-01-01T00:00"), "yellow"), (T("2025-01-01T05:00"), "red")], resolved=T("2025-01-02T00:00"))
    assert lifecycle.state_at(ep, T("2024-12-31T23:00")) is None
    first, counts = lifecycle.advance({}, [ep], T("2025-01-01T01:00"), {"r"})
    assert counts["opened"] == 1 and first[0]["status"] == "open" and first[0]["level"] == "yellow"
    stored = {first[0]["alert_id"]: first[0]}
    assert lifecycle.advance(stored, [ep], T("2025-01-01T01:00"), {"r"})[0] == []  # same hour again: nothing
    later, counts = lifecycle.advance(stored, [ep], T("2025-01-01T06:00"), {"r"})
    assert counts["escalated"] == 1 and later[0]["status"] == "escalated" and later[0]["level"] == "red"
    stored = {later[0]["alert_id"]: later[0]}
    assert lifecycle.advance(stored, [ep], T("2025-01-01T02:00"), {"r"})[0] == []  # a backfill: no regression
    done, counts = lifecycle.advance(stored, [ep], T("2025-01-03T00:00"), {"r"})
    assert counts["resolved"] == 1 and done[0]["status"] == "resolved"
    assert [e["event_key"] for e in lifecycle.events(done[0])] == ["opened", "escalated:1", "resolved"]


def test_an_alert_whose_condition_left_the_data_is_resolved_and_an_ack_survives_until_escalation():
    ep = _episode([(T("2025-01-01T00:00"), "yellow"), (T("2025-01-01T05:00"), "orange")])
    rows, _ = lifecycle.advance({}, [ep], T("2025-01-01T01:00"), {"r"})
    acked = lifecycle.acknowledge(rows[0], "duty officer", "on site", T("2025-01-01T02:00"))
    assert acked["status"] == "acknowledged"
    stored = {acked["alert_id"]: acked}
    rows, _ = lifecycle.advance(stored, [ep], T("2025-01-01T06:00"), {"r"})
    assert rows[0]["status"] == "escalated" and rows[0]["acknowledged_by"] == "duty officer"
    stored = {rows[0]["alert_id"]: rows[0]}
    assert lifecycle.advance(stored, [], T("2025-01-01T07:00"), {"other_rule"})[0] == []  # not this rule's
    gone, counts = lifecycle.advance(stored, [], T("2025-01-01T07:00"), {"r"})
    assert counts["resolved"] == 1 and gone[0]["resolution"] == lifecycle.NO_LONGER_HOLDS


def test_delivery_is_retried_with_backoff_until_the_receiver_accepts():
    with HttpReceiver() as http:
        http.refuse = 2
        ok, attempts, error = notify.send(http.url("x"), "title", "body", "orange", retries=3, backoff=0.01)
        assert (ok, attempts, error) == (True, 3, None)
        assert http.requests == 3 and len(http.received) == 1
        http.refuse_all = True
        ok, attempts, error = notify.send(http.url("x"), "title", "body", "orange", retries=1, backoff=0.01)
        assert (ok, attempts) == (False, 2) and error


# --- on the built test city -----------------------------------------------------------------------------


def _city_settings(built_city, lake, channels, **alerts):
    settings = load_settings(environ=built_city.env)
    cfg = AlertsConfig(
        clock="latest_data", notify_within_hours=1e6, retry_backoff_seconds=0.01, channels=channels, **alerts
    )
    return settings.model_copy(update={"lake_root": lake, "alerts": cfg})


def _tags(messages) -> Counter:
    """(alert_id, event_key) of each delivered message, from the '#<id> <event>' tag of its title."""
    return Counter(re.search(r"#([0-9a-f]{16}) (\S+)", m).groups() for m in messages)


@pytest.fixture(scope="module")
def evaluated(built_city, spark, tmp_path_factory):
    """The built city's alerts evaluated once into a fresh alerts folder, delivered to an HTTP receiver
    (every alert; and one district's yellow+) and an SMTP server (that district's orange+)."""
    with duckdb.connect(str(built_city.warehouse), read_only=True) as con:
        district = con.execute(
            "select district_code from fct_hazard group by 1 order by count(*) desc, 1 limit 1"
        ).fetchone()[0]
    with HttpReceiver() as http, SmtpReceiver() as smtp:
        channels = (
            AlertChannel(name="city_http", url=http.url("city"), language="en"),
            AlertChannel(name="district_http", url=http.url("district"), districts=(district,), min_level="yellow"),
            AlertChannel(
                name="district_mail", url=smtp.url("duty@district.test"), districts=(district,), min_level="orange"
            ),
        )
        settings = _city_settings(built_city, tmp_path_factory.mktemp("alerts_lake"), channels)
        first = alert_run.evaluate(settings, lambda: spark)
        specs = store.tables(settings.alerts_dir)
        version = delta_io.version(specs["alert"]), delta_io.version(specs["alert_delivery"])
        received = (len(http.received), len(smtp.messages))
        again = alert_run.evaluate(settings, lambda: spark)
        after_again = (len(http.received), len(smtp.messages))
        version_again = delta_io.version(specs["alert"]), delta_io.version(specs["alert_delivery"])
        older = alert_run.evaluate(
            settings, lambda: spark, as_of=dt.datetime.fromisoformat(first["as_of"]) - dt.timedelta(days=20)
        )
        after_backfill = (
            (len(http.received), len(smtp.messages)),
            (
                delta_io.version(specs["alert"]),
                delta_io.version(specs["alert_delivery"]),
            ),
        )
    alerts = store.read_alerts(specs["alert"])
    return {
        "settings": settings,
        "district": district,
        "http": http,
        "smtp": smtp,
        "first": first,
        "again": again,
        "older": older,
        "received": received,
        "after_again": after_again,
        "versions": (version, version_again),
        "after_backfill": after_backfill,
        "alerts": alerts,
        "as_of": dt.datetime.fromisoformat(first["as_of"]),
    }


def test_device_alerts_sent_equal_the_episodes_at_or_above_the_rules_level(evaluated, built_city):
    rule = next(r for r in load_rules(evaluated["settings"]) if r.condition == "device_grade")
    rank = ["blue", "yellow", "orange", "red"].index(rule.params["min_level"]) + 1
    with duckdb.connect(str(built_city.warehouse), read_only=True) as con:
        episodes = set(
            con.execute("select alert_id from fct_device_alert where peak_grade_rank >= ?", [rank]).df().alert_id
        )
    assert episodes, "the test city has no device alert episodes at the rule's level"
    device_alerts = {a["alert_id"]: a for a in evaluated["alerts"].values() if a["rule_id"] == rule.id}
    assert {json.loads(a["evidence"])["episode"] for a in device_alerts.values()} == episodes
    sent = _tags(m["title"] for m in evaluated["http"].on("city"))
    opened = [aid for (aid, key) in sent if key == "opened" and aid in device_alerts]
    assert len(opened) == len(episodes) and sent.most_common(1)[0][1] == 1  # each once


def _expected_hazard_stages(truth_dir, as_of: dt.datetime, tz: ZoneInfo, hours_before: float, days_after: float):
    """What the generator's truth implies: per published hazard, the stages due by `as_of` while still open."""
    truth = pd.read_csv(truth_dir / "hazards_truth.csv.gz", dtype=str, keep_default_na=False)
    truth = truth[truth.delivery == "clean"]
    day = lambda d: dt.datetime.combine(dt.date.fromisoformat(d), dt.time(), tzinfo=tz).astimezone(UTC)  # noqa: E731
    expected = {"reminder": set(), "overdue": set(), "long_overdue": set()}
    for h in truth.itertuples():
        end = day(h.rectify_deadline) + dt.timedelta(days=1)
        found = day(h.found_date)
        closed_on = h.rectified_date or h.accepted_date
        closed = day(closed_on) if closed_on else None
        times = {
            "reminder": end - dt.timedelta(hours=hours_before),
            "overdue": end,
            "long_overdue": end + dt.timedelta(days=days_after),
        }
        for stage, at in times.items():
            at = max(at, found)
            later = [s for s, t in times.items() if max(t, found) == at]
            if later[-1] != stage:
                continue  # found at or after this stage's time: the alert opens at the later stage
            if at <= as_of and (closed is None or closed > at):
                expected[stage].add(h.hazard_id)
    return expected


def test_hazard_reminders_and_escalations_equal_the_generator_truth(evaluated, built_city):
    settings = evaluated["settings"]
    rule = next(r for r in load_rules(settings) if r.condition == "hazard_deadline")
    expected = _expected_hazard_stages(
        built_city.truth_dir,
        evaluated["as_of"],
        ZoneInfo(settings.timezone),
        rule.params["remind_hours_before"],
        rule.params["escalate_after_days_overdue"],
    )
    assert expected["reminder"] and expected["overdue"], "the test city has no hazard reaching its deadline"
    hazard_alerts = {a["alert_id"]: a for a in evaluated["alerts"].values() if a["rule_id"] == rule.id}
    got = {"reminder": Counter(), "overdue": Counter(), "long_overdue": Counter()}
    stage_of = {}
    for a in hazard_alerts.values():
        for i, (_, _, stage) in enumerate(json.loads(a["level_history"])):
            stage_of[(a["alert_id"], "opened" if i == 0 else f"escalated:{i}")] = (stage, a["subject_id"])
    for tag, n in _tags(m["title"] for m in evaluated["http"].on("city")).items():
        if tag in stage_of:
            stage, hazard = stage_of[tag]
            got[stage][hazard] += n
    for stage in expected:
        assert set(got[stage]) == expected[stage], stage
        assert set(got[stage].values()) <= {1}, f"{stage}: a hazard was told twice"


def test_one_open_alert_per_subject_and_rule(evaluated):
    open_alerts = Counter(
        (a["rule_id"], a["subject_id"]) for a in evaluated["alerts"].values() if a["resolved_at"] is None
    )
    assert open_alerts and max(open_alerts.values()) == 1
    statuses = Counter(a["status"] for a in evaluated["alerts"].values())
    assert statuses["resolved"] and statuses["escalated"]


def test_running_again_sends_nothing_twice_and_commits_nothing(evaluated):
    assert evaluated["first"]["opened"] > 0 and evaluated["first"]["deliveries"]["sent"] > 0
    assert evaluated["again"]["opened"] == evaluated["again"]["escalated"] == evaluated["again"]["resolved"] == 0
    assert evaluated["again"]["deliveries"] == {}
    assert evaluated["after_again"] == evaluated["received"]
    before, again = evaluated["versions"]
    assert again == before
    # evaluating an hour 20 days back (a backfill after the fact) changes and sends nothing
    assert evaluated["after_backfill"] == (evaluated["received"], before)


def test_red_reaches_every_channel_and_the_message_says_what_where_how_severe_and_what_to_do(evaluated):
    http, smtp, district = evaluated["http"], evaluated["smtp"], evaluated["district"]
    alerts = evaluated["alerts"]
    events = {
        (a["alert_id"], e["event_key"]): (e["level"], a["district_code"])
        for a in alerts.values()
        for e in lifecycle.events(a)
        if e["event"] in ("opened", "escalated")
    }
    assert any(level == "red" for level, _ in events.values())
    want_mail = {
        k for k, (level, d) in events.items() if level == "red" or (d == district and level in ("orange", "red"))
    }
    want_district = {k for k, (level, d) in events.items() if level == "red" or (d == district and level != "blue")}
    assert set(_tags(m["subject"] for m in smtp.messages)) == want_mail
    assert set(_tags(m["title"] for m in http.on("district"))) == want_district
    assert set(_tags(m["title"] for m in http.on("city"))) == set(events)
    mail = next(m for m in smtp.messages if "[RED]" in m["subject"])
    assert mail["to"] == ["duty@district.test"] and "【红色】" in mail["subject"]
    for needle in (
        "What: ",
        "Where: ",
        "Level: RED",
        "What to do: ",
        "citysafe alerts ack ",
        "内容：",
        "地点：",
        "处置要求：",
    ):
        assert needle in mail["text"], needle
    english_only = next(m for m in http.on("city"))
    assert "内容" not in english_only["body"] and english_only["type"] in ("info", "warning", "failure")


def test_an_undelivered_notification_exits_8_and_goes_out_once_on_the_next_run(built_city, spark, tmp_path):
    with HttpReceiver() as http:
        channels = (AlertChannel(name="red_only", url=http.url("red"), min_level="red"),)
        settings = _city_settings(built_city, tmp_path / "lake", channels, retries=1)
        http.refuse_all = True
        with pytest.raises(alert_run.DeliveryError) as err:
            alert_run.evaluate(settings, lambda: spark)
        assert err.value.exit_code == 8 and "the next run tries again" in str(err.value)
        ledger = store.read_deliveries(store.tables(settings.alerts_dir)["alert_delivery"])
        assert ledger and {r["status"] for r in ledger.values()} == {"failed"}
        assert {r["attempts"] for r in ledger.values()} == {2}
        http.refuse_all = False
        alert_run.evaluate(settings, lambda: spark)
        alert_run.evaluate(settings, lambda: spark)
        sent = _tags(m["title"] for m in http.received)
        assert set(sent) == {(a, e) for a, e, _ in ledger} and set(sent.values()) == {1}


def test_alerts_cli_list_ack_and_failure_notice(built_city, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from citysafe import logs
    from pipeline.cli import main

    with HttpReceiver() as http:
        env = {
            **{k: v for k, v in built_city.env.items() if k.startswith("CITYSAFE_")},
            "CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"),
            "CITYSAFE_ALERTS__NOTIFY_WITHIN_HOURS": "0",
            "CITYSAFE_ALERTS__CHANNELS": f'[{{name: stewards, url: "{http.url("ops")}", pipeline_failures: true}}]',
        }
        for key in [k for k in os.environ if k.startswith("CITYSAFE_")]:
            monkeypatch.delenv(key)

        def cli(*args):
            result = CliRunner().invoke(main, list(args), env=env, prog_name="citysafe")
            logs.reset()
            return result.exit_code, result.stdout + result.stderr

        code, out = cli("alerts", "--as-of", "not-a-time")
        assert code == 2 and "--as-of 'not-a-time': not an ISO 8601 time" in out
        code, out = cli("alerts")
        assert code == 0 and re.search(r"alerts at \S+: \d+ opened", out), out
        # notify_within_hours 0: only what happens at the evaluation hour itself is sent; the rest is history
        stale = int(re.search(r"not sent \(older than 0 h\) (\d+)", out).group(1))
        assert stale > 10 * len(http.received)
        code, out = cli("alerts", "list")
        assert code == 0 and "open" in out
        alert_id = re.search(r"^  ([0-9a-f]{16}) ", out, re.M).group(1)
        code, out = cli("alerts", "ack", alert_id[:8], "--by", "duty officer Li", "--note", "team on site")
        assert code == 0 and "acknowledged by duty officer Li" in out, out
        code, out = cli("alerts", "list")
        assert re.search(rf"{alert_id}\s+\w+\s+acknowledged", out)
        code, out = cli("alerts", "list", "--all", "--summary")
        assert code == 0 and re.search(r"^hazard_deadline +(yellow|orange|red) +\w+ +\d+$", out, re.M), out
        code, out = cli("alerts", "ack", "ffffffffff", "--by", "x")
        assert code == 2 and "no alert 'ffffffffff'" in out
        code, out = cli(
            "alerts",
            "notify-failure",
            "--dag",
            "citysafe_marts",
            "--task",
            "marts",
            "--airflow-run",
            "manual__1",
            "--try",
            "2",
        )
        assert code == 0 and "sent to 1 channel" in out
        notice = http.on("ops")[-1]
        assert "citysafe_marts" in notice["title"] and "try 2" in notice["body"]
