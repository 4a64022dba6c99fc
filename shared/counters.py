"""The product counters both workers keep in Redis (`keys.stats`), defined once.

Each is a field of Redis hashes that every process increments (one of
`keys.STATS_SHARDS` at random, so no one Cluster slot is hot); the API's
/metrics adds the shards up and shows them (`tglogin_<metric>_total`) for all processes together.
"""

from __future__ import annotations

import enum


class Counter(enum.StrEnum):
    CODES_ISSUED = "codes_issued"
    CODES_REDEEMED = "codes_redeemed"
    CODES_ISSUE_LIMITED = "codes_issue_limited"
    REDEEMS_FAILED = "redeems_failed"
    REDEEMS_RATE_LIMITED = "redeems_rate_limited"
    REDEEM_FAIL_ALARMS = "redeem_fail_alarms"
    API_KEY_FAILURES = "api_key_failures"
    LOGIN_REQUESTS_CREATED = "login_requests_created"
    LOGIN_REQUESTS_APPROVED = "login_requests_approved"
    LOGIN_REQUESTS_DENIED = "login_requests_denied"
    APPROVALS_CREATED = "approvals_created"
    APPROVALS_APPROVED = "approvals_approved"
    APPROVALS_DENIED = "approvals_denied"
    APPROVALS_UNDELIVERABLE = "approvals_undeliverable"
    APPROVALS_LIMITED = "approvals_limited"
    WEBHOOKS_DELIVERED = "webhooks_delivered"
    WEBHOOK_ATTEMPTS_FAILED = "webhook_attempts_failed"
    EVENTS_DEAD_LETTERED = "events_dead_lettered"


# counter -> (metric name without _total, help)
METRICS: dict[Counter, tuple[str, str]] = {
    Counter.CODES_ISSUED: ("tglogin_codes_issued", "Codes the bot issued."),
    Counter.CODES_REDEEMED: ("tglogin_codes_redeemed", "Codes redeemed for an access token."),
    Counter.API_KEY_FAILURES: (
        "tglogin_api_key_failures", "Requests with a missing or wrong API key."
    ),
    Counter.REDEEMS_FAILED: (
        "tglogin_redeems_failed", "Redeems of an unknown, expired or used code."
    ),
    Counter.REDEEMS_RATE_LIMITED: (
        "tglogin_redeems_rate_limited",
        "Redeems refused because their address failed too often.",
    ),
    Counter.CODES_ISSUE_LIMITED: (
        "tglogin_code_issues_limited",
        "Code requests refused because the user asked too often.",
    ),
    Counter.REDEEM_FAIL_ALARMS: (
        "tglogin_redeem_fail_alarms",
        "Minutes in which failures of all addresses passed the alarm threshold.",
    ),
    Counter.LOGIN_REQUESTS_CREATED: (
        "tglogin_login_requests_created", "Deep-link login requests created."
    ),
    Counter.LOGIN_REQUESTS_APPROVED: (
        "tglogin_login_requests_approved",
        "Deep-link login requests a user approved in the bot.",
    ),
    Counter.LOGIN_REQUESTS_DENIED: (
        "tglogin_login_requests_denied",
        "Deep-link login requests a user denied in the bot.",
    ),
    Counter.APPROVALS_CREATED: (
        "tglogin_approvals_created", "Push approvals created and queued for the bot."
    ),
    Counter.APPROVALS_APPROVED: (
        "tglogin_approvals_approved", "Push approvals a user approved in the bot."
    ),
    Counter.APPROVALS_DENIED: (
        "tglogin_approvals_denied",
        "Push approvals a user denied in the bot (a wrong number included).",
    ),
    Counter.APPROVALS_UNDELIVERABLE: (
        "tglogin_approvals_undeliverable",
        "Push approvals the bot could not send (the user blocked it, or no such chat).",
    ),
    Counter.APPROVALS_LIMITED: (
        "tglogin_approvals_limited",
        "Push approvals refused by the per-user or per-client limit.",
    ),
    Counter.WEBHOOKS_DELIVERED: (
        "tglogin_webhooks_delivered", "Events a webhook endpoint accepted (2xx)."
    ),
    Counter.WEBHOOK_ATTEMPTS_FAILED: (
        "tglogin_webhook_attempts_failed",
        "Webhook attempts answered non-2xx, timed out or unreachable (each is retried).",
    ),
    Counter.EVENTS_DEAD_LETTERED: (
        "tglogin_events_dead_lettered",
        "Events that exhausted their retries and went to the dead-letter stream.",
    ),
}
