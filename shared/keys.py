"""Every Redis key tglogin uses: one prefix constant each, its TTL noted.

Keys that a single operation touches together share a hash tag (`{...}`),
so every multi-key script or transaction stays in one Cluster hash slot:
everything about one Telegram user is tagged `{u<user id>}`.
Codes, tokens, login ids, deep-link payloads and client addresses are never in
a key in plain text; those parts are keyed hashes (`shared.hashing.digest`).
"""

from __future__ import annotations

import random

PREFIX = "tgl:"

# a code, by a short keyed hash of its digits -> "<state><user id>|<expiry ms>|<update
# mark or ->|<generation>|<record>": state L (live), S (redeemed), R (replaced by a newer
# code or ended by /logout); the update mark names the update that asked for it; the
# generation is the user's session generation at the issue (USER's g); the record is
# the user's public fields as a JSON array (`shared.codes.pack_record`). One key per
# code and nothing else per issue: a user's codes are found by their slots
# (`shared.hashing.slot_code`). TTL the code's lifetime, or to the end of its issue
# window if later (it counts toward the issue limit until then). Never overwritten:
# only its state changes
CODE = PREFIX + "c:"
# per user who has a token: hash r (the user record as of the last login), g (session
# generation, absent until the first /logout: raising it ends every token made before),
# and per token id "<expiry s>|<lifetime min>|<last used min>|<network>[|<OIDC family
# hash>[|<client name>]]" (`shared.tokens`), "-<expiry>" once revoked, so /logout can
# say how many it ends and /sessions list them (up to 256 listed); TTL
# TOKEN_TTL_SECONDS from the last token or /logout
USER = PREFIX + "user:"
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
# product counters (codes issued, redeemed, failed, rate limited, alarms), spread over
# STATS_SHARDS hashes so that no one Cluster slot takes every increment; /metrics adds
# them up; no TTL
STATS = PREFIX + "stats:"
STATS_SHARDS = 16
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
# per request decided for an API client: its login.approved/login.denied, appended by the
# decision (the request's slot: tagged like LOGIN) with the fields of an EVENTS entry plus
# u (the deciding user's id), until a deliverer moves it into that user's EVENTS (then the
# emptied key is deleted); TTL EVENT_RETRY_SECONDS + a day from the decision, past the
# request's own (shared.events.login_events_ttl_ms: an event never moved expires then)
LOGIN_EVENTS = PREFIX + "evl:"
# pub/sub channel (not a key): each message is the poll-id hash of a request just decided
LOGIN_DECIDED = PREFIX + "login:decided"

# OpenID Connect (`shared.oidc_grants`): tagged by the user, like USER, so a grant's
# code, its token family and the user's hash (session generation, token ids) change
# in one script. Named by keyed hashes of the code and the family id, never by them.
# an authorization code -> hash {c client id, r redirect URI, p PKCE S256 challenge,
# n nonce ("" none), s scope, a auth_time, u user record, g session generation, e expiry
# ms}; TTL OIDC_CODE_TTL_SECONDS (+1). Once redeemed or refused only {f: the family hash
# it started, or "-"} is kept, TTL the settings' TOKEN_TTL_SECONDS (as long as that
# family can live), so a reuse is refused and revokes the family
OIDC_CODE = PREFIX + "oidc:code:"
# a refresh-token family -> hash {c client id, n rotation number of the current refresh
# token, g session generation, s scope, a auth_time, u user record, t<token id> -> expiry
# s of each access token it issued}; TTL TOKEN_TTL_SECONDS from the last rotation;
# deleted when revoked (reuse) or found ended by /logout
OIDC_FAMILY = PREFIX + "oidc:fam:"
# how long an authorization code counts (issue 9: at most 60 s)
OIDC_CODE_TTL_SECONDS = 60
# per client address (an IPv6 /64 counts as one): refused requests at the token and
# revocation endpoints (invalid_client, invalid_grant) in the current window;
# TTL API_KEY_FAIL_WINDOW_SECONDS from the first
OIDC_FAILS = PREFIX + "oidc:fails:"

# Events (`shared.events`, delivery in `api_worker.delivery`). A user's events, in order:
# a stream per user, tagged like USER, so the script that makes a change appends its
# event in the same atomic step (fields t type, c client name, d data JSON, ts ms; a
# moved one eid its stable id); never trimmed: an entry is deleted once its client has
# it (delivered or dead-lettered), the key once it is empty; no TTL
EVENTS = PREFIX + "ev:"
# stream of "user u has events to deliver" (field u; l a login request's EVENTS-like
# stream to move from; queued before the script that appends the event, so its id's ms
# dates it for the grace, shared.events), read by the API processes' consumer group
# EVENT_GROUP; never
# trimmed: an entry is acked and deleted once handled, so it holds only the unread and
# the pending
EVENT_WAKE = PREFIX + "evwake"
EVENT_GROUP = "deliver"
# per user (tagged like USER): notes "<stream>|<ms>" of the login requests' event
# streams (LOGIN_EVENTS names) whose decision may hold an event of this user's not yet
# moved into EVENTS, and when the note was made; added with the decision's wake (before
# the decision), or by a young wake finding the user held ("" for the user's own
# stream); drained by whoever holds the user's EVENT_LOCK before it delivers any of the
# user's events; a note of a stream gone or empty is dropped once older than
# shared.events.grace_ms (a member without "|<ms>" counts as old); no TTL
EVENT_LOGINS = PREFIX + "evlogins:"
# per client (by a keyed hash of its API_KEYS name): the events delivered to it, read by
# GET /v1/events (fields t, d the data as written, an approval's seed not its id, ts, w
# the event's webhook-id, u the user's id); MAXLEN ~ EVENT_LOG_MAXLEN
# (GET /v1/events says `gap` when a cursor falls before what is kept)
EVENT_CLIENT = PREFIX + "evc:"
# sorted set user id -> ms when that user's delivery is due again (a retry, or a
# user another process was busy with); no TTL; a pass that takes the user re-scores it
# to its lock's end plus half a ms (a lease, event_due.lua), and removes it at its end
# only if the score is still that
EVENT_DUE = PREFIX + "evdue"
# the lease of the API process whose turn it is to sweep every event stream (its
# consumer name; TTL a little under api_worker.delivery.SWEEP_EVERY)
EVENT_SWEEP = PREFIX + "evsweep"
# per user: the process delivering that user's events (a lock); TTL a delivery step
EVENT_LOCK = PREFIX + "evlock:"
# per user: hash of retry states, one per event being retried, by its stable id (its
# webhook-id, so a moved event keeps it): JSON {p 1 once in the pull stream, f first
# attempt ms, n attempts, due ms of the next, ok the URLs that have it}; a field is
# dropped with its event; TTL EVENT_RETRY_SECONDS + a day from the last write
EVENT_RETRY = PREFIX + "evretry:"
# events that exhausted their retries, kept for inspection; MAXLEN ~ EVENT_LOG_MAXLEN
EVENT_DEAD = PREFIX + "evdead"
EVENT_LOG_MAXLEN = 10000

# Push approvals (`shared.approvals`): tagged by the user, like USER, so an approval, its
# user's record and the user's approval count share one Cluster slot (the decision
# script can append its event there too). Named by a keyed hash of the approval id.
# an approval -> hash {c client key hash, n client name, t the action text, s state
# (absent when none), m match number (absent when none), e expiry (unix ms), uid the
# user's id, i the seed the id is keyed from (`shared.approvals.approval_id`), st
# pending|approved|denied|undeliverable|expired, by decider id, u decider JSON, mid the
# message the bot sent, sg when a bot took it to send (ms) and sq for which queue entry
# (`approval_sending.lua`)}; TTL APPROVAL_TTL_SECONDS + a day from creation (pending
# until `e`, then read as expired; kept so a late sweep still marks it and appends
# approval.expired: `approval_due.PENDING_KEEP_MS`), set to APPROVAL_TTL_SECONDS by a
# decision or by the sweep marking it expired (the result waits that long to be read).
# A tombstone {x} takes the key of an approval the sweep found never created at its
# check time; TTL 2 x APPROVAL_TTL_SECONDS
APPROVAL = PREFIX + "approval:"
# per user: approvals created for them in the current window, all clients together
# (this key), and per client (this key + ":<client key hash>", or ":open"); TTL
# APPROVAL_USER_WINDOW_SECONDS from the first
APPROVAL_USER_COUNT = PREFIX + "approval:user:"
# per API client (its key hash): approvals asked for in the current window, refused
# ones (unknown users) too; TTL APPROVAL_CLIENT_WINDOW_SECONDS from the first; tagged
# with APPROVAL_DUE's name, so one script counts and writes the due entry (one slot)
APPROVAL_CLIENT_COUNT = PREFIX + "approval:client:"
# stream of approvals for the bot to send: entries {u user id, h approval key hash};
# consumer group APPROVAL_GROUP (every bot process); an entry is deleted once sent or
# found decided or gone; no TTL (entries live seconds while a bot runs)
APPROVAL_QUEUE = PREFIX + "approval:queue"
# the queue's length at most (approximately), should no bot read it for a long time
APPROVAL_QUEUE_MAXLEN = 100_000
APPROVAL_GROUP = "bots"
# sorted set "<user id>:<approval key hash>" -> when the bot's sweep looks at it: written
# before the approval (its check time, seconds later), then its expiry ms; a sweeper
# claims due members by moving their score on by a lease (`approval_claim.lua`), then
# queues one no bot took, marks the pending ones expired when their time comes
# (approval.expired) and removes every member whose approval is settled or gone (or
# was never created); no TTL (members live as long as their approval)
APPROVAL_DUE = PREFIX + "approval:due"

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


# a per-user key's hash tag: "{u" + the user id + "}"
_USER_TAG_OPEN = "{u"


def _user_tag(user_id: int) -> str:
    return f"{_USER_TAG_OPEN}{user_id}}}"


def before_user_id(prefix: str) -> str:
    """What a per-user key of `prefix` (USER, EVENTS) holds before the user id: a script
    that learns the user from a value makes the key as that, the id, and "}"."""
    return prefix + _USER_TAG_OPEN


def code(code_hash: str) -> str:
    return CODE + code_hash


def user(user_id: int) -> str:
    return USER + _user_tag(user_id)


def oidc_code(user_id: int, code_hash: str) -> str:
    return OIDC_CODE + _user_tag(user_id) + code_hash


def oidc_family(user_id: int, family_hash: str) -> str:
    return OIDC_FAMILY + _user_tag(user_id) + family_hash


def events(user_id: int) -> str:
    return EVENTS + _user_tag(user_id)


def events_user(key: str) -> int | None:
    """The user id an `events(user id)` key names; None for another key."""
    tag = key.removeprefix(EVENTS)
    if tag == key or not (tag.startswith(_USER_TAG_OPEN) and tag.endswith("}")):
        return None
    digits = tag[len(_USER_TAG_OPEN):-1]
    return int(digits) if digits.isdigit() else None


def event_lock(user_id: int) -> str:
    return EVENT_LOCK + _user_tag(user_id)


def event_retry(user_id: int) -> str:
    return EVENT_RETRY + _user_tag(user_id)


def event_logins(user_id: int) -> str:
    return EVENT_LOGINS + _user_tag(user_id)


def event_client(client_hash: str) -> str:
    return EVENT_CLIENT + client_hash


def stats(shard: int | None = None) -> str:
    """One shard of the counters: `shard`, or one picked at random to increment."""
    if shard is None:
        shard = random.randrange(STATS_SHARDS)
    return f"{STATS}{{s{shard}}}"


def all_stats() -> list[str]:
    return [stats(shard) for shard in range(STATS_SHARDS)]


def redeem_fails(address_hash: str) -> str:
    return f"{REDEEM_FAILS}{{{address_hash}}}"


def redeem_pending(address_hash: str) -> str:
    return f"{REDEEM_PENDING}{{{address_hash}}}"


def key_fails(address_hash: str) -> str:
    return KEY_FAILS + address_hash


def oidc_fails(address_hash: str) -> str:
    return OIDC_FAILS + address_hash


def fail_rate(unix_minute: int) -> str:
    return FAIL_RATE + str(unix_minute)


def login(id_hash: str) -> str:
    # tagged by its own hash, so any future companion key can share its slot
    return f"{LOGIN}{{{id_hash}}}"


def login_events(id_hash: str) -> str:
    # the request's own slot: its decision appends the event in the same script
    return f"{LOGIN_EVENTS}{{{id_hash}}}"


def login_link(payload_hash: str) -> str:
    return LOGIN_LINK + payload_hash


def login_creates(address_hash: str) -> str:
    return LOGIN_CREATES + address_hash


def approval(user_id: int, approval_hash: str) -> str:
    return APPROVAL + _user_tag(user_id) + approval_hash


def approval_user_count(user_id: int) -> str:
    return APPROVAL_USER_COUNT + _user_tag(user_id)


def approval_client_count(client_hash: str) -> str:
    return f"{APPROVAL_CLIENT_COUNT}{client_hash}{{{APPROVAL_DUE}}}"


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
