"""The table `make bench` prints, with issue 8's targets beside each figure."""

from __future__ import annotations

from typing import Any

# key, what it is, target (a string for the reader), check (None: no target)
ROWS: list[tuple[str, str, str]] = [
    ("generator_ceiling_rps", "load generator vs trivial endpoint, req/s", ""),
    ("bare_rps", "bare Starlette endpoint, req/s", ""),
    ("redeem_rps", "POST /v1/codes/redeem, req/s", ""),
    ("redeem_ratio", "redeem / bare", ">= 0.5 (aim 0.75)"),
    ("bare_p50_ms", "bare p50, ms", ""),
    ("bare_p99_ms", "bare p99, ms", ""),
    ("redeem_p50_ms", "redeem p50, ms", ""),
    ("redeem_p99_ms", "redeem p99, ms", "<= 3 x bare_p99_ms"),
    ("redeem_errors", "redeem answers not 2xx", "0"),
    ("me_rps", "GET /v1/me, req/s", ""),
    ("me_p99_ms", "GET /v1/me p99, ms", ""),
    ("round_trips_redeem", "Redis round trips per redeem", "<= 2"),
    ("round_trips_issue", "Redis round trips per code issue", "<= 2"),
    ("round_trips_me", "Redis round trips per /v1/me", "= 1"),
    ("bytes_per_code", "Redis used_memory per active code, B", "<= 250"),
    ("issue_rps", "codes issued/s in-process (64 concurrent)", ""),
    ("bytes_per_code_1m", "the same with 1,000,000 codes, B", "within 10% of per code"),
    ("redeem_rps_10k_live", "redeem req/s among 10,000 live codes (median of 10 runs of 1 s)",
     ""),
    ("redeem_rps_1m_live", "  the same among 1,000,000 live codes (alternating with it)", ""),
    ("redeem_1m_vs_10k", "the two, 1M / 10k", ">= 0.9"),
    ("redeem_errors_live", "  answers not 2xx in those runs", "0"),
    ("bytes_per_token", "Redis used_memory per live access token, B", "<= 200"),
    ("deployed_p50_ms", "supervisord, 2 processes, keep-alive p50, ms", "<= direct + 1"),
    ("direct_p50_ms", "  the same endpoint, 1 process direct, p50 ms", ""),
    ("process_share_max", "largest share of requests one process served", "<= 0.7"),
    ("bare_bot_replies_per_s", "bare PTB bot /start replies/s (median of 6 rounds)", ""),
    ("bot_replies_per_s", "tglogin bot /start replies/s (median)", ""),
    ("bot_ratio", "bot / bare bot (median of the rounds' ratios)", ">= 0.85"),
    ("wake_p50_ms", "approve -> held poll answered p50, ms", ""),
    ("wake_p99_ms", "approve -> held poll answered p99, ms", "<= 50"),
    ("wake_decide_p50_ms", "  of which the decision itself p50, ms", ""),
]


def _passes(key: str, results: dict[str, Any]) -> str:
    value = results.get(key)
    if not isinstance(value, int | float):
        return ""
    checks = {
        "redeem_ratio": value >= 0.5,
        "redeem_p99_ms": value <= 3 * float(results.get("bare_p99_ms", 0)),
        "redeem_errors": value == 0,
        "redeem_errors_live": value == 0,
        "round_trips_redeem": value <= 2,
        "round_trips_issue": value <= 2,
        "round_trips_me": value == 1,
        "bytes_per_code": value <= 250,
        "bytes_per_code_1m": abs(value - float(results.get("bytes_per_code", 0)))
        <= 0.1 * float(results.get("bytes_per_code", 0) or 1),
        "redeem_1m_vs_10k": value >= 0.9,
        "bytes_per_token": value <= 200,
        "deployed_p50_ms": value <= float(results.get("direct_p50_ms", 0)) + 1,
        "process_share_max": value <= 0.7,
        "bot_ratio": value >= 0.85,
        "wake_p99_ms": value <= 50,
    }
    if key not in checks:
        return ""
    return "ok" if checks[key] else "MISS"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(results: dict[str, Any]) -> str:
    lines = [f"{'key':<24} {'value':>10}  {'target':<20} {'':<4} what",
             "-" * 100]
    for key, what, target in ROWS:
        if key in results:
            lines.append(f"{key:<24} {_fmt(results[key]):>10}  {target:<20} "
                         f"{_passes(key, results):<4} {what}")
    lines.append("-" * 100)
    settings = results.get("settings", {})
    lines.append("generator: " + str(results.get("generator")) + "; stack: "
                 + str(results.get("stack")))
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    for key, why in results.get("not_measured", {}).items():
        lines.append(f"not measured: {key}: {why}")
    return "\n".join(lines)
