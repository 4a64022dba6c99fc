"""Every Redis key tglogin uses: one prefix constant each, its TTL noted.

Keys that a single operation touches together share a hash tag (`{...}`),
so every multi-key script or transaction stays in one Cluster hash slot:
everything about one Telegram user is tagged `{u<user id>}`.
Codes, tokens, login ids, deep-link payloads and client addresses are never in
a key in plain text; those parts are keyed hashes (`shared.hashing.digest`).
"""

from __future__ import annotations

PREFIX = "tgl:"

# code hash -> the user id it was issued to; TTL CODE_TTL_SECONDS. A code redeems only
# while it is its user's current code (`c` in USER), so a replaced or redeemed code's
# key is inert until it expires
CODE = PREFIX + "code:"
# per user: hash r (the user record, JSON), g (session generation: /logout raises it and
# so ends every token made before), c and ce (the current code's hash and its expiry,
# ms); TTL TOKEN_TTL_SECONDS from the last code, redeem or logout
USER = PREFIX + "user:"
# per user: sorted set of code-issue times (ms) for the issue limit; TTL the issue window
USER_ISSUES = PREFIX + "user:issues:"
# per user: sorted set of live token ids -> expiry (ms), so /logout can say how many it
# ends; TTL TOKEN_TTL_SECONDS, renewed on issue
USER_TOKENS = PREFIX + "user:tokens:"
# per user: sorted set of revoked token ids -> their expiry (ms); TTL the last expiry
USER_REVOKED = PREFIX + "user:revoked:"
# per user: sorted set of update keys (bot id, update id, fingerprint) that issued a code
# -> when (ms), entries older than a day dropped (a re-handled update re-sends its code
# instead of issuing another); TTL 1 day
USER_UPDATES = PREFIX + "user:updates:"
# per client address (an IPv6 /64 counts as one): failed redeems in the current window,
# TTL REDEEM_FAIL_WINDOW_SECONDS from the first failure; and the redeems in flight
# (sorted set attempt id -> ms), TTL ATTEMPT_IN_FLIGHT_MS. Both tagged by the address
REDEEM_FAILS = PREFIX + "fails:"
REDEEM_PENDING = PREFIX + "fails:pending:"
# per client address: requests with a wrong API key in the current window;
# TTL API_KEY_FAIL_WINDOW_SECONDS from the first
KEY_FAILS = PREFIX + "keyfails:"
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

# Everything about one bot (the Telegram bot id) is tagged `{b<bot id>}`, so the
# lease, the ledger and the flood-limit scripts each run in one Cluster slot.
BOT = PREFIX + "bot:"
# the instance polling getUpdates (its lease); TTL LEASE_MS, renewed while it polls
POLLER = ":poller"
# hash instance -> ms until which it is alive (heartbeat); TTL 1 day, dead entries pruned
LIVE = ":live"
# hash per bucket of 1024 update ids: "<update id>:<fingerprint>" -> "d" (handled) or
# "c:<instance>" (being handled); TTL UPDATES_TTL_SECONDS from the last write
UPDATES = ":updates:"
# the digest of the webhook configuration last set with setWebhook; no TTL (deleted by
# a poller); and the lock of the one process that checks it, TTL one check period
WEBHOOK = ":webhook"
WEBHOOK_LOCK = ":webhook:lock"
# sorted set of recent sends (all chats) -> ms; TTL one rate window
SENDS = ":sends"
# per chat: sorted set of recent sends to that chat -> ms; TTL one chat window
CHAT_SENDS = ":sends:c"
# ms until which Telegram asked every process to hold sends (a 429's retry_after);
# TTL that wait
FLOOD_WAIT = ":floodwait"

UPDATES_TTL_SECONDS = 86400
UPDATE_BUCKET = 1024
FAIL_RATE_TTL_SECONDS = 120
# an admitted redeem that never settled (its process died) stops holding room after this
ATTEMPT_IN_FLIGHT_MS = 10_000


def _user_tag(user_id: int) -> str:
    return f"{{u{user_id}}}"


def code(code_hash: str) -> str:
    return CODE + code_hash


def user(user_id: int) -> str:
    return USER + _user_tag(user_id)


def user_issues(user_id: int) -> str:
    return USER_ISSUES + _user_tag(user_id)


def user_tokens(user_id: int) -> str:
    return USER_TOKENS + _user_tag(user_id)


def user_updates(user_id: int) -> str:
    return USER_UPDATES + _user_tag(user_id)


def user_revoked(user_id: int) -> str:
    return USER_REVOKED + _user_tag(user_id)


def redeem_fails(address_hash: str) -> str:
    return f"{REDEEM_FAILS}{{{address_hash}}}"


def redeem_pending(address_hash: str) -> str:
    return f"{REDEEM_PENDING}{{{address_hash}}}"


def key_fails(address_hash: str) -> str:
    return KEY_FAILS + address_hash


def fail_rate(unix_minute: int) -> str:
    return FAIL_RATE + str(unix_minute)


def login(id_hash: str) -> str:
    # tagged by its own hash, so any future companion key can share its slot
    return f"{LOGIN}{{{id_hash}}}"


def login_link(payload_hash: str) -> str:
    return LOGIN_LINK + payload_hash


def login_creates(address_hash: str) -> str:
    return LOGIN_CREATES + address_hash


def _bot(bot_id: int, suffix: str) -> str:
    return f"{BOT}{{b{bot_id}}}{suffix}"


def poller(bot_id: int) -> str:
    return _bot(bot_id, POLLER)


def live(bot_id: int) -> str:
    return _bot(bot_id, LIVE)


def updates(bot_id: int, update_id: int) -> str:
    return _bot(bot_id, f"{UPDATES}{update_id // UPDATE_BUCKET}")


def webhook(bot_id: int) -> str:
    return _bot(bot_id, WEBHOOK)


def webhook_lock(bot_id: int) -> str:
    return _bot(bot_id, WEBHOOK_LOCK)


def sends(bot_id: int) -> str:
    return _bot(bot_id, SENDS)


def chat_sends(bot_id: int, chat_id: int | str) -> str:
    return _bot(bot_id, f"{CHAT_SENDS}{chat_id}")


def flood_wait(bot_id: int) -> str:
    return _bot(bot_id, FLOOD_WAIT)
