"""Push approvals: an API client asks a known user to approve one action in the bot.

The id the client gets is `<user id>.<22 characters>`: the user id, and 128 bits keyed
by AUTH_SECRET from a random seed (`approval_id`). The user id in it is no secret from
the client (it named the user) and lets the API find the user's Cluster slot. Redis
holds a keyed hash of the whole id, which names the approval (`keys.approval(user id,
hash)`), and the seed (`i`), so an approval.* event written in Redis can name the
approval and its deliverer, holding AUTH_SECRET, turn the seed into the id its client
knows; a copy of Redis alone gives no id to poll with, and changing the user id in an
id names a record that does not exist. A poll needs the id and the API key of the
client that created it (the record keeps the client's key hash).

The bot knows the approval by that hash: its queue entry and the callback data of its
buttons carry it, never the id. A tap decides only for the approval's own user (the key
is tagged by the tapping user's id, and the script checks the id too), so a forwarded
message tapped by someone else decides nothing.

"Known user": the user's hash (`keys.user`) holds the public record `r` for everyone
who logged in through tglogin (a redeemed code, an approved deep link or OpenID Connect
login) within TOKEN_TTL_SECONDS of their last login or /logout. Others are unknown.

Expiry: an approval past its `e` reads as expired everywhere at once (the poll and the
decision scripts compare with Redis's clock); the bot's sweep (`expire_due`, every bot
process every few seconds, over `APPROVAL_DUE`) is the one step that marks it expired,
the moment approval.expired belongs to, and takes the buttons off its message. A pending
record is kept a day past its expiry (`PENDING_KEEP_MS`), so a sweep that comes late
still marks it and appends the event; marking it (or deciding it) sets its lifetime to
APPROVAL_TTL_SECONDS from then.

Creation is three round trips, in an order that no crash point can lose: the client's
budget with the approval's due entry (a check time a few seconds on), the create script
(known user, the user's budgets, the record, in the user's slot), then the queue entry
the bot fleet reads (`shared.approval_queue`). The sweep repairs whatever a crash or a
stall left between them (`shared.approval_due` says how): a record never created is
forgotten, an approval no bot took by its check time is queued again.

Sending is at least once. A bot notes that it takes an approval to send before the
message goes to Telegram, and the message's id after (`take`, `sent`). A second queue
entry for the same approval waits while that note is fresh; a bot killed after Telegram
took the message but before it noted the id leaves its entry to be claimed and sent
again. Exactly once is not possible with the Bot API; the second message is harmless:
every message's buttons carry the same key hash, the first decision wins, and the bot
edits the message it knows of (`Decision.message_id`) whichever one was tapped.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from shared import keys
from shared.approval_decisions import (
    STATUSES,
    ApprovalDecisions,
    Decision,
    Prompt,
    Status,
    Taken,
)
from shared.approval_due import PENDING_KEEP_MS, Expired, check_ms, due_member
from shared.approval_queue import ApprovalQueue, Entry, is_key_hash, queue_send
from shared.codes import User, public_user
from shared.counters import Counter
from shared.hashing import b64url, digest, keyed, new_id
from shared.limits import RateLimited, retry_after
from shared.logins import MATCH_HIGH, MATCH_LOW, client_id
from shared.redis import Unavailable, scripts, unavailable_on_error
from shared.settings import ApiClient, Settings

# what the bot side imports from here, whichever module holds it
__all__ = [
    "ApprovalQueue", "ApprovalStatus", "Approvals", "CreatedApproval", "Decision", "Entry",
    "Expired", "Prompt", "Status", "Taken", "UnknownUser", "approval_id", "is_key_hash",
    "parse_id",
]

MAX_TEXT = 200
MAX_STATE = 128
# Telegram user ids are positive and below 2^52; the id's user part is their decimal
_ID = re.compile(r"([1-9][0-9]{0,15})\.([A-Za-z0-9_-]{22})")
class UnknownUser(Exception):
    """The user has not logged in through tglogin (within TOKEN_TTL_SECONDS)."""


class _Created(enum.IntEnum):
    """approval_create.lua's first answer."""

    UNKNOWN_USER = 0
    CREATED = 1
    USER_LIMITED = 2
    TOO_LATE = 3


@dataclass(frozen=True)
class CreatedApproval:
    id: str
    expires_in: int
    match_number: int | None


@dataclass(frozen=True)
class ApprovalStatus:
    status: Status
    expires_in: int | None = None  # pending: seconds left
    user: User | None = None  # who decided it (approved, denied)
    state: str | None = None


def approval_id(settings: Settings, user_id: int, seed: str) -> str:
    """An approval's id from its user and the seed in its record (`i`); 128 bits."""
    mac = keyed(settings.auth_secret, f"approval-id:{user_id}:{seed}".encode()).digest()
    return f"{user_id}.{b64url(mac[:16])}"


def parse_id(approval_id: str) -> int | None:
    """The user id an approval id carries, or None for anything not shaped like one."""
    found = _ID.fullmatch(approval_id)
    return None if found is None else int(found[1])


class Approvals(ApprovalDecisions):
    """Push approval operations on one Redis client: the API's (here) and the bot's
    (`ApprovalDecisions`)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        super().__init__(redis, settings)
        self._admit = scripts(redis).get("approval_admit.lua")
        self._create = scripts(redis).get("approval_create.lua")
        self._poll = scripts(redis).get("approval_poll.lua")

    def approval_id(self, user_id: int, seed: str) -> str:
        """The id of the approval whose record holds `seed` (its `i`): the user id, and a
        keyed hash of the seed. Redis holds the seed, so an event can name the approval,
        and whoever delivers the event (with AUTH_SECRET) turns it into the id its client
        knows; a copy of Redis alone gives no id."""
        return approval_id(self.settings, user_id, seed)

    def key_hash(self, approval_id: str) -> str:
        """What the record is named by, the bot's buttons carry, and decisions publish."""
        return digest(self.settings.auth_secret, "approval", approval_id)[:32]

    # -- API side -----------------------------------------------------------------------

    async def create(
        self, client: ApiClient | None, user_id: int, text: str, state: str | None,
        match: bool,
    ) -> CreatedApproval:
        """Queue an approval for the bot to send to `user_id`: the due entry, the record,
        the queue entry, in that order (`shared.approval_due`).

        Raises UnknownUser, RateLimited (the client's budget, the client's budget for the
        user, or the user's budget from all clients together), Unavailable.
        """
        settings = self.settings
        client_hash = client_id(settings, client)
        seed = new_id()
        approval_id = self.approval_id(user_id, seed)
        key_hash = self.key_hash(approval_id)
        number = (secrets.randbelow(MATCH_HIGH - MATCH_LOW + 1) + MATCH_LOW) if match else None
        ttl = settings.approval_ttl_seconds
        with unavailable_on_error():
            admitted, value = await self._admit(
                keys=[keys.approval_client_count(client_hash or "open"), keys.APPROVAL_DUE],
                args=[settings.approval_client_limit, settings.approval_client_window_seconds,
                      due_member(user_id, key_hash), check_ms(settings)],
            )
            if not int(admitted):
                await self._count(Counter.APPROVALS_LIMITED)
                raise RateLimited(retry_after(int(value)))
            # refused below: the due entry stays, and the sweep drops it at its check
            outcome, value = await self._create(
                keys=[
                    keys.user(user_id), keys.approval(user_id, key_hash),
                    keys.approval_user_count(user_id),
                    # this client's count for the user: in the user's slot (the tag)
                    f"{keys.approval_user_count(user_id)}:{client_hash or 'open'}",
                ],
                args=[
                    client_hash, client.name if client is not None else "", text,
                    state or "", 0 if state is None else 1,
                    "" if number is None else str(number), ttl * 1000,
                    settings.approval_user_limit, settings.approval_user_window_seconds,
                    user_id, seed, settings.approval_user_total_limit, PENDING_KEEP_MS,
                ],
            )
            created = _Created(int(outcome))
            if created is _Created.UNKNOWN_USER:
                raise UnknownUser
            if created is _Created.USER_LIMITED:
                await self._count(Counter.APPROVALS_LIMITED)
                raise RateLimited(retry_after(int(value)))
            if created is _Created.TOO_LATE:
                raise Unavailable("the approval was created after its check time")
            # a crash before this: the sweep queues it at its check time
            async with self.redis.pipeline(transaction=False) as pipe:
                queue_send(pipe, user_id, key_hash)
                pipe.hincrby(keys.stats(), Counter.APPROVALS_CREATED, 1)
                await pipe.execute()
        return CreatedApproval(id=approval_id, expires_in=ttl, match_number=number)

    async def status(self, approval_id: str, client: ApiClient | None) -> ApprovalStatus | None:
        """The approval's status for the client that created it; None when it is unknown,
        gone, or another client's."""
        user_id = parse_id(approval_id)
        if user_id is None:
            return None
        with unavailable_on_error():
            found = await self._poll(
                keys=[keys.approval(user_id, self.key_hash(approval_id))],
                args=[client_id(self.settings, client)],
            )
        status = STATUSES.get(str(found[0]))
        if status is None:
            return None
        state = str(found[3]) if int(found[2]) else None
        decider = str(found[4])
        return ApprovalStatus(
            status=status,
            expires_in=retry_after(int(found[1])) if status == "pending" else None,
            user=public_user(json.loads(decider)) if decider else None,
            state=state,
        )
