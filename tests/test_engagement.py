"""Machine opens and bot clicks, judged from recorded-shape SES events (Delivery, Open, Click as SES
publishes them), converted by the SES events bridge and carrying the user agent and address SES reports."""

from __future__ import annotations

import ast
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from sinks.ses_events import to_feedback
from streams.config import ConfigError, MetricsSettings, load_settings
from streams.core.engagement import (APPLE_MPP, BOT, HUMAN, LINK_BURST, MACHINE, SCANNER_AGENT, SOON_AFTER_DELIVERY,
                                     EngagementRules, Verdict)

T = 1_790_000_000_000
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Mobile/15E148")
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
          "Safari/605.1.15")
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
BARRACUDA = "Mozilla/5.0 (compatible; Barracuda Sentinel link protection)"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ses_event(kind: str, at: int, message_id: str = "0102018f-aaaa", **detail: Any) -> dict[str, Any]:
    """An SES event-publishing record of ``kind`` (Delivery, Open, Click) as SES documents it."""
    mail = {"timestamp": _iso(T), "source": "shop@example.com", "sendingAccountId": "123456789012",
            "messageId": message_id, "destination": ["ann@example.com"],
            "tags": {"command_id": ["c1"], "customer_id": ["ann"], "ses:configuration-set": ["shopmail"]}}
    body: dict[str, Any] = {"timestamp": _iso(at)}
    if kind == "Delivery":
        body |= {"processingTimeMillis": 850, "recipients": ["ann@example.com"], "smtpResponse": "250 2.0.0 OK",
                 "reportingMTA": "a8-30.smtp-out.amazonses.com"}
    else:
        body |= {"ipAddress": detail.get("ip", "198.51.100.7"), "userAgent": detail.get("ua", SAFARI)}
        if kind == "Click":
            body |= {"link": detail.get("link", "https://shop.example.com/cart"), "linkTags": {}}
    return {"eventType": kind, "mail": mail, kind[0].lower() + kind[1:]: body}


def feedback(event: dict[str, Any]) -> dict[str, Any]:
    """What the SES events bridge makes of ``event``: it carries the user agent and address SES reported."""
    record = to_feedback(event)
    assert record is not None
    detail = event[event["eventType"][0].lower() + event["eventType"][1:]]
    assert (record["user_agent"], record["ip_address"]) == (detail.get("userAgent"), detail.get("ipAddress"))
    return record


def judge(*events: dict[str, Any], settings: MetricsSettings | None = None) -> list[Verdict | None]:
    return EngagementRules(settings or MetricsSettings()).classify_all([feedback(e) for e in events])


DELIVERED = ses_event("Delivery", T + 2_000)


def test_an_apple_mail_privacy_protection_prefetch_is_a_machine_open():
    verdicts = judge(DELIVERED, ses_event("Open", T + 40 * 60_000, ua="Mozilla/5.0", ip="17.58.63.11"))
    assert verdicts == [None, Verdict(MACHINE, APPLE_MPP)]


def test_the_proxys_bare_user_agent_from_outside_apples_ranges_is_not_taken_for_apple_mpp():
    (_, outside) = judge(DELIVERED, ses_event("Open", T + 3_600_000, ua="Mozilla/5.0", ip="203.0.113.9"))
    (_, full_agent) = judge(DELIVERED, ses_event("Open", T + 3_600_000, ua=IPHONE_MAIL, ip="17.58.63.11"))
    assert outside == Verdict(HUMAN) and full_agent == Verdict(HUMAN)


def test_an_open_within_seconds_of_delivery_is_a_machine_open_and_one_minutes_later_is_human():
    at_delivery = judge(DELIVERED, ses_event("Open", T + 4_000, ua=IPHONE_MAIL))[1]
    later = judge(DELIVERED, ses_event("Open", T + 2_000 + 5 * 60_000, ua=IPHONE_MAIL))[1]
    assert at_delivery == Verdict(MACHINE, SOON_AFTER_DELIVERY) and later == Verdict(HUMAN)


def test_a_click_within_seconds_of_delivery_is_a_bot_click():
    verdicts = judge(DELIVERED, ses_event("Click", T + 9_000), ses_event("Click", T + 2_000 + 20 * 60_000))
    assert verdicts[1:] == [Verdict(BOT, SOON_AFTER_DELIVERY), Verdict(HUMAN)]


def test_every_link_of_a_message_clicked_in_one_burst_is_a_bot_click_each():
    at = T + 3 * 3_600_000  # long after delivery: only the burst gives the scanner away
    links = ["https://shop.example.com/cart", "https://shop.example.com/p/mug", "https://shop.example.com/unsubscribe"]
    burst = [ses_event("Click", at + 300 * i, link=link) for i, link in enumerate(links)]
    verdicts = judge(DELIVERED, *burst)
    assert verdicts[1:] == [Verdict(BOT, LINK_BURST)] * 3


def test_a_person_clicking_two_links_a_minute_apart_and_one_link_twice_is_human():
    at = T + 3_600_000
    verdicts = judge(DELIVERED, ses_event("Click", at, link="https://shop.example.com/cart"),
                     ses_event("Click", at + 500, link="https://shop.example.com/cart"),
                     ses_event("Click", at + 60_000, link="https://shop.example.com/p/mug"))
    assert verdicts[1:] == [Verdict(HUMAN)] * 3


def test_a_security_gateways_user_agent_is_a_bot_click_and_a_machine_open_whenever_it_comes():
    verdicts = judge(DELIVERED, ses_event("Open", T + 3_600_000, ua=BARRACUDA),
                     ses_event("Click", T + 3_600_000, ua="python-requests/2.31.0"))
    assert verdicts[1:] == [Verdict(MACHINE, SCANNER_AGENT), Verdict(BOT, SCANNER_AGENT)]


def test_gmails_image_proxy_opens_when_the_reader_does_so_it_is_a_human_open():
    assert judge(DELIVERED, ses_event("Open", T + 3_600_000, ua=GMAIL_PROXY, ip="66.249.84.1"))[1] == Verdict(HUMAN)


def test_without_a_recorded_delivery_opens_and_clicks_are_judged_without_timing():
    verdicts = judge(ses_event("Open", T + 1_000, ua=IPHONE_MAIL), ses_event("Click", T + 1_500))
    assert verdicts == [Verdict(HUMAN), Verdict(HUMAN)]


def test_the_delivery_of_another_message_does_not_time_this_one():
    other = ses_event("Delivery", T + 2_000, message_id="0102018f-bbbb")
    assert judge(other, ses_event("Click", T + 3_000))[1] == Verdict(HUMAN)


def test_records_are_judged_on_the_whole_message_whatever_their_order():
    at = T + 3_600_000
    burst = [ses_event("Click", at + i, link=f"https://shop.example.com/{i}") for i in range(3)]
    assert judge(*reversed(burst), DELIVERED)[:3] == [Verdict(BOT, LINK_BURST)] * 3


def test_the_thresholds_are_metrics_settings_read_from_the_environment():
    settings = load_settings(env={"SHOPMAIL_METRICS__BOT_CLICK_WITHIN_MS": "60000",
                                  "SHOPMAIL_METRICS__SCANNER_USER_AGENTS": "acme-linkscan",
                                  "SHOPMAIL_METRICS__APPLE_PROXY_IP_RANGES": "17.0.0.0/8,2620:149::/32"}).metrics
    assert settings.scanner_user_agents == ["acme-linkscan"]
    verdicts = judge(DELIVERED, ses_event("Click", T + 32_000), ses_event("Click", T + 3_600_000, ua="ACME-LinkScan/2"),
                     ses_event("Click", T + 7_200_000, ua=BARRACUDA, link="https://shop.example.com/p/mug"),
                     ses_event("Open", T + 7_200_000, ua="Mozilla/5.0", ip="2620:149:a:1::5"), settings=settings)
    assert verdicts[1:] == [Verdict(BOT, SOON_AFTER_DELIVERY), Verdict(BOT, SCANNER_AGENT), Verdict(HUMAN),
                            Verdict(MACHINE, APPLE_MPP)]
    assert judge(DELIVERED, ses_event("Click", T + 32_000))[1] == Verdict(HUMAN)  # default: 10 s


def test_a_burst_rule_of_zero_links_is_off():
    at = T + 3_600_000
    burst = [ses_event("Click", at + i, link=f"https://shop.example.com/{i}") for i in range(5)]
    assert judge(DELIVERED, *burst, settings=MetricsSettings(bot_burst_links=0))[1:] == [Verdict(HUMAN)] * 5


def test_a_malformed_address_range_in_the_settings_is_a_clear_error():
    with pytest.raises(ValueError, match="metrics.apple_proxy_ip_ranges: .*17.0.0.0/33"):
        EngagementRules(MetricsSettings(apple_proxy_ip_ranges=["17.0.0.0/33"]))
    with pytest.raises(ConfigError, match="metrics: unknown setting 'bot_click_ms'"):
        load_settings(env={"SHOPMAIL_METRICS__BOT_CLICK_MS": "5"})


def test_the_rules_import_nothing_but_the_standard_library_and_the_domain_core():
    source = Path(__file__).parents[1] / "streams" / "core" / "engagement.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    foreign = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names
               and not m.startswith("streams.core") and m != "__future__"}
    assert imported and not foreign
