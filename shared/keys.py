"""Every Redis key tglogin uses: one prefix constant each, its TTL noted.

Keys that a single operation touches together share a hash tag (`{...}`),
so every multi-key script or transaction stays in one Cluster hash slot:
everything about one Telegram user is tagged `{u<user id>}`.
Codes, tokens, login ids, deep-link payloads and client addresses are never in
a key in plain text; those parts are keyed hashes (`shared.hashing.digest`).
"""

from __future__ import annotations

PREFIX = "tgl:"

# code hash -> JSON {"user": {...}}; TTL CODE_TTL_SECONDS; deleted on redeem
CODE = PREFIX + "code:"
# per user: hash of the user's current code; TTL CODE_TTL_SECONDS
USER_CODE = PREFIX + "user:code:"
# per user: sorted set of code-issue times (ms) for the issue limit; TTL the issue window
USER_ISSUES = PREFIX + "user:issues:"
# per user: sorted set token hash -> expiry (ms); TTL TOKEN_TTL_SECONDS, renewed on issue
USER_TOKENS = PREFIX + "user:tokens:"
# per user: sorted set of update ids already handled -> when (ms), entries older than
# a day dropped (dedupe of redelivered updates); TTL 1 day
USER_UPDATES = PREFIX + "user:updates:"
# token hash -> JSON {"user": {...}, "exp": ms}; TTL TOKEN_TTL_SECONDS
TOKEN = PREFIX + "token:"
# per client address: failed redeems in the current window; TTL REDEEM_FAIL_WINDOW_SECONDS
REDEEM_FAILS = PREFIX + "fails:"
# failed redeems of all addresses in one minute (suffix: unix minute); TTL 120 s
FAIL_RATE = PREFIX + "failrate:"
# product counters (codes issued, redeemed, failed, rate limited, alarms); no TTL
STATS = PREFIX + "stats"
# the bot's @username, published by every bot worker at start; no TTL
BOT_USERNAME = PREFIX + "bot:username"
# deep-link login request by poll-id hash -> hash {c: client key hash, n: client name,
# s: state (absent when none), st: pending|approved|denied, u: user JSON, by: decider id};
# TTL LOGIN_REQUEST_TTL_SECONDS from creation, set once more to it by the decision (the
# result waits that long to be fetched); deleted when an approval is delivered
LOGIN = PREFIX + "login:"
# deep-link payload hash -> poll-id hash of its request; TTL LOGIN_REQUEST_TTL_SECONDS
LOGIN_LINK = PREFIX + "login:link:"
# per client address: login requests created in the current window;
# TTL LOGIN_REQUEST_WINDOW_SECONDS
LOGIN_CREATES = PREFIX + "login:creates:"
# pub/sub channel (not a key): each message is the poll-id hash of a request just decided
LOGIN_DECIDED = PREFIX + "login:decided"

UPDATES_TTL_SECONDS = 86400
FAIL_RATE_TTL_SECONDS = 120


def _user_tag(user_id: int) -> str:
    return f"{{u{user_id}}}"


def code(code_hash: str) -> str:
    return CODE + code_hash


def user_code(user_id: int) -> str:
    return USER_CODE + _user_tag(user_id)


def user_issues(user_id: int) -> str:
    return USER_ISSUES + _user_tag(user_id)


def user_tokens(user_id: int) -> str:
    return USER_TOKENS + _user_tag(user_id)


def user_updates(user_id: int) -> str:
    return USER_UPDATES + _user_tag(user_id)


def token(token_hash: str) -> str:
    return TOKEN + token_hash


def redeem_fails(address_hash: str) -> str:
    return REDEEM_FAILS + address_hash


def fail_rate(unix_minute: int) -> str:
    return FAIL_RATE + str(unix_minute)


def login(id_hash: str) -> str:
    # tagged by its own hash, so any future companion key can share its slot
    return f"{LOGIN}{{{id_hash}}}"


def login_link(payload_hash: str) -> str:
    return LOGIN_LINK + payload_hash


def login_creates(address_hash: str) -> str:
    return LOGIN_CREATES + address_hash
