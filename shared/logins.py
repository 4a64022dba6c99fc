"""Deep-link login requests: created and polled by the API, decided in the bot.

A request has two independent 128-bit random values: its `id`, which only
the API client that created it knows and polls with, and the deep-link
`payload`, which travels through the user's browser and Telegram. Redis holds
neither, only their keyed hashes: the request under `login:{<id hash>}`, and a
pointer from the payload's hash to the id hash. Knowing a link therefore says
nothing about the id, and no way leads from a payload to the result.

The bot decides with one atomic script (the first decision counts) that also
publishes the id hash on `LOGIN_DECIDED`; `decisions()` is what API processes
listen to so a waiting poll answers at once. Access tokens for approvals are
sealed by the API when it hands the approval out (`shared.sessions`), with the
user's session generation the bot read when the user approved, so a /logout
since then ends it too; Redis never holds a token.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import re
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

from shared import keys
from shared.counters import Counter
from shared.events import event_args, login_events_ttl_ms, queue_wake
from shared.hashing import digest, new_id
from shared.limits import address_hash
from shared.redis import Subscriber, scripts, unavailable_on_error
from shared.settings import ApiClient, Settings
from shared.store import (
    RateLimited,
    Redemption,
    Store,
    User,
    public_user,
    queue_attempt,
    retry_after,
)

logger = logging.getLogger(__name__)

# the `c` (client) of an authorization page's requests: never an API client's key hash
AUTHORIZATION_CLIENT = "oidc"
# the numbers an authorization page shows for the user to pick in the bot
MATCH_LOW, MATCH_HIGH = 10, 99

# what new_id() makes, and what Telegram allows in a /start payload
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")

Status = Literal["pending", "approved", "denied"]
_STATUSES: dict[str, Status] = {"pending": "pending", "approved": "approved", "denied": "denied"}


class NoBotUsername(Exception):
    """No bot has published its username yet and TELEGRAM_BOT_USERNAME is unset."""


@dataclass(frozen=True)
class CreatedLogin:
    id: str
    payload: str
    bot_username: str
    expires_in: int

    @property
    def deep_link(self) -> str:
        return f"https://t.me/{self.bot_username}?start={self.payload}"

    @property
    def start_command(self) -> str:
        return f"/start {self.payload}"


@dataclass(frozen=True)
class PollResult:
    """What the client learns: `expires_in` for pending; the rest for an approval."""

    status: Status
    expires_in: int | None = None
    redemption: Redemption | None = None
    state: str | None = None


@dataclass(frozen=True)
class Authorization:
    """What an OpenID Connect authorization page asks the bot for, kept with the request
    until its outcome turns into an authorization code."""

    client_id: str
    client_name: str
    host: str  # the site's host, from the redirect URI: the bot shows it
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    state: str | None


@dataclass(frozen=True)
class CreatedAuthorization:
    login: CreatedLogin
    match: int  # the number the page shows, and the bot asks the user to pick


@dataclass(frozen=True)
class AuthorizationResult:
    status: Status
    authorization: Authorization
    expires_in: int | None = None  # pending or denied
    user: User | None = None  # approved: who, at which session generation
    generation: int = 0


@dataclass(frozen=True)
class Prompt:
    """What the bot shows for a payload: whom the login is for and where it stands."""

    client_name: str  # "" when the API is open (no API_KEYS)
    status: Status
    # an authorization page's request: the site's host, and the number to pick
    host: str = ""
    match: int | None = None


@dataclass(frozen=True)
class Decision:
    """`decided`: this tap decided it (as `status`); `already`: an earlier one did.

    `mismatch`: this tap asked to approve an authorization page's request without the
    number the page shows (a wrong pick, or none), so it counted as a denial; the bot
    says so, since the user may be on a phishing page relaying the link.
    """

    outcome: Literal["decided", "already"]
    status: Status
    client_name: str
    host: str = ""  # an authorization page's request: the site's host
    mismatch: bool = False


class _Decided(enum.IntEnum):
    """login_decide.lua's first answer."""

    GONE = -1
    ALREADY = 0
    NOW = 1
    REPEATED = 2  # the same user's same decision again: a redelivered tap


def client_id(settings: Settings, client: ApiClient | None) -> str:
    """Whose request it is: a keyed hash of the API key; "" when the API is open."""
    if client is None:
        return ""
    return digest(settings.auth_secret, "client", client.key.reveal())[:32]


class Logins:
    """Deep-link login operations on a `Store`'s connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self.settings = store.settings
        self._decide = scripts(store.redis).get("login_decide.lua")
        self._poll = scripts(store.redis).get("login_poll.lua")
        self._take = scripts(store.redis).get("login_take.lua")
        self._hash = store.hash

    def id_hash(self, login_id: str) -> str:
        """What `decisions()` yields for this request id."""
        return self._hash("login", login_id)

    # -- API side -----------------------------------------------------------------------

    async def create(
        self, client: ApiClient | None, state: str | None, address: str
    ) -> CreatedLogin:
        """A new pending request for `client`. Two round trips: the per-address
        limit and the bot's username, then the writes.

        Raises RateLimited (too many from `address`), NoBotUsername, Unavailable.
        """
        record: dict[str, str] = {
            "c": client_id(self.settings, client),
            "n": client.name if client is not None else "",
        }
        if state is not None:
            record["s"] = state
        return await self._create(record, address)

    async def create_authorization(
        self, authorization: Authorization, address: str
    ) -> CreatedAuthorization:
        """A pending request made by the OpenID Connect authorization page: the bot
        names the client and the site's host, and asks the user to pick `match` (the
        number the page shows) among three. Only `poll_authorization` reads it.

        Raises RateLimited (the same per-address budget as `create`), NoBotUsername,
        Unavailable.
        """
        match = secrets.randbelow(MATCH_HIGH - MATCH_LOW + 1) + MATCH_LOW
        record = {
            "c": AUTHORIZATION_CLIENT,
            "n": authorization.client_name,
            "h": authorization.host,
            "m": str(match),
            "s": json.dumps(dataclasses.asdict(authorization), separators=(",", ":")),
        }
        created = await self._create(record, address)
        return CreatedAuthorization(login=created, match=match)

    async def _create(self, record: dict[str, str], address: str) -> CreatedLogin:
        settings = self.settings
        ttl = settings.login_request_ttl_seconds
        # an IPv6 /64 in any spelling is one address, as for every per-address limit
        limit_key = keys.login_creates(address_hash(settings, address))
        with unavailable_on_error():
            async with self.redis.pipeline(transaction=False) as pipe:
                queue_attempt(pipe, limit_key, settings.login_request_window_seconds)
                pipe.get(keys.BOT_USERNAME)
                created, _, window_ms, published = await pipe.execute()
            if int(created) > settings.login_request_limit:
                raise RateLimited(retry_after(int(window_ms)))
            username = settings.telegram_bot_username or published
            if not username:
                raise NoBotUsername
            login_id, payload = new_id(), new_id()
            id_hash = self.id_hash(login_id)
            async with self.redis.pipeline(transaction=False) as pipe:
                fields: dict[Any, Any] = {**record, "st": "pending"}
                pipe.hset(keys.login(id_hash), mapping=fields)
                pipe.expire(keys.login(id_hash), ttl)
                pipe.set(keys.login_link(self._hash("link", payload)), id_hash, ex=ttl)
                pipe.hincrby(keys.stats(), Counter.LOGIN_REQUESTS_CREATED, 1)
                await pipe.execute()
        return CreatedLogin(
            id=login_id, payload=payload, bot_username=str(username), expires_in=ttl
        )

    async def poll(
        self, login_id: str, client: ApiClient | None, address: str = ""
    ) -> PollResult | None:
        """The request's status for its own client, or None (unknown, expired, another
        client's, already delivered). An approval comes back once, with a new access
        token (its session listed from `address`'s network); the request is gone after
        that."""
        found = await self._read(login_id, client_id(self.settings, client))
        if found is None or isinstance(found, PollResult):
            return found
        user, generation, state = found
        # the approval is taken: from here the token is only sealed, nothing can fail
        token = await self.store.sessions.token_for_approval(user, generation, client, address)
        redemption = Redemption(
            user=public_user(user), access_token=token,
            expires_in=self.settings.token_ttl_seconds,
        )
        return PollResult(status="approved", redemption=redemption, state=state)

    async def poll_authorization(self, login_id: str) -> AuthorizationResult | None:
        """An authorization page's request: pending or denied (with what it asked for),
        or approved once (with the user and the session generation they approved at);
        None when unknown, expired, taken already, or not an authorization's."""
        found = await self._read(login_id, AUTHORIZATION_CLIENT)
        if found is None:
            return None
        if isinstance(found, PollResult):
            return AuthorizationResult(
                status=found.status, expires_in=found.expires_in,
                authorization=Authorization(**json.loads(found.state or "{}")),
            )
        user, generation, state = found
        return AuthorizationResult(
            status="approved", user=user, generation=generation,
            authorization=Authorization(**json.loads(state or "{}")),
        )

    async def take_authorization(self, login_id: str) -> Authorization | None:
        """Take a pending authorization page's request out of the bot's reach (a code
        was typed on the page instead): what it asked for, or None when it is unknown,
        expired, decided, or not an authorization's. A tap on its link after this finds
        it expired."""
        if not _TOKEN_SHAPE.fullmatch(login_id):
            return None
        with unavailable_on_error():
            taken = await self._take(
                keys=[keys.login(self.id_hash(login_id))], args=[AUTHORIZATION_CLIENT]
            )
        return None if not taken else Authorization(**json.loads(str(taken)))

    async def _read(
        self, login_id: str, client: str
    ) -> PollResult | tuple[User, int, str | None] | None:
        if not _TOKEN_SHAPE.fullmatch(login_id):
            return None
        with unavailable_on_error():
            found = await self._poll(keys=[keys.login(self.id_hash(login_id))], args=[client])
        status = str(found[0])
        if status == "gone":
            return None
        if status != "approved":
            return PollResult(
                status="pending" if status == "pending" else "denied",
                expires_in=retry_after(int(found[1])), state=str(found[2]),
            )
        user: User = json.loads(found[1])
        state = str(found[3]) if int(found[2]) else None
        return user, int(found[4]), state

    # -- bot side -----------------------------------------------------------------------

    async def _link_target(self, payload: str) -> str | None:
        """The id hash of the request a deep-link payload points to, if it is live."""
        if not _TOKEN_SHAPE.fullmatch(payload):
            return None
        id_hash = await self.redis.get(keys.login_link(self._hash("link", payload)))
        return None if id_hash is None else str(id_hash)

    async def prompt(self, payload: str) -> Prompt | None:
        """What `/start <payload>` is about, or None for an unknown or expired link."""
        with unavailable_on_error():
            id_hash = await self._link_target(payload)
            if id_hash is None:
                return None
            status, name, host, match = await self.redis.hmget(
                keys.login(id_hash), ["st", "n", "h", "m"]
            )
        if status not in _STATUSES:
            return None
        return Prompt(
            client_name=str(name or ""), status=_STATUSES[status], host=str(host or ""),
            match=int(match) if match else None,
        )

    async def decide(
        self, payload: str, user: User, approve: bool, pick: int | None = None
    ) -> Decision | None:
        """Approve or deny as `user`; only the first decision counts. None when the
        request is unknown or expired. Wakes the API processes waiting on it.

        `pick` is the number the user chose among the bot's three. A request with a
        match number (an authorization page's) is approved only when `pick` is that
        number; any other approval of it, with a wrong pick or none, denies it, in the
        same atomic step, so a relayed link cannot be retried until the right number
        comes up. Requests without a match number ignore `pick`.
        """
        decision = "approved" if approve else "denied"
        uid = int(user["id"])
        with unavailable_on_error():
            id_hash = await self._link_target(payload)
            if id_hash is None:
                return None
            # the token this approval leads to is sealed with the user's session
            # generation now: a /logout from here on ends it too
            generation = await self.store.sessions.enter(user) if approve else 0
            # the event, if this decision counts for an API client's request, goes to
            # the request's own stream in the same script (shared.events); its wake,
            # naming that stream and noting it in the user's slot, goes in the same
            # pipeline (nothing to move: dropped)
            events = keys.login_events(id_hash)
            # type, client and state are the script's to add (it reads them)
            _, _, data, ms = event_args("login.approved", "", {"user": public_user(user)})
            async with self.redis.pipeline(transaction=False) as pipe:
                # the note and wake before the script (shared.events)
                queue_wake(pipe, uid, events)
                await self._decide(
                    keys=[keys.login(id_hash), events],
                    args=[
                        decision,
                        json.dumps(public_user(user), separators=(",", ":")),
                        str(uid),
                        self.settings.login_request_ttl_seconds * 1000,
                        keys.LOGIN_DECIDED,
                        id_hash,
                        generation,
                        "" if pick is None else str(pick),
                        data,
                        ms,
                        login_events_ttl_ms(self.settings),
                    ],
                    client=pipe,
                )
                *_, (outcome, status, name, host, mismatch) = await pipe.execute()
            decided = _Decided(int(outcome))
            if decided is _Decided.NOW:
                counter = (Counter.LOGIN_REQUESTS_APPROVED if status == "approved"
                           else Counter.LOGIN_REQUESTS_DENIED)
                await self.redis.hincrby(keys.stats(), counter, 1)
        if decided is _Decided.GONE:
            return None
        return Decision(
            outcome="decided" if decided in (_Decided.NOW, _Decided.REPEATED) else "already",
            status="approved" if status == "approved" else "denied",
            client_name=str(name),
            host=str(host),
            mismatch=bool(int(mismatch)),
        )


def decisions(settings: Settings) -> AsyncGenerator[str | None, None]:
    """The id hashes of requests as they are decided, on one dedicated connection.

    Yields None first, once subscribed: from then on no decision is missed, so
    anything a listener learned before may be stale and should be read again.
    Raises Unavailable when the connection is lost or Redis stops answering (no
    silent reconnect, which could drop messages unnoticed); call again to
    resubscribe, on the master Sentinel names then, or another Cluster node.
    """
    return _subscriber(settings).listen(keys.LOGIN_DECIDED)


@functools.cache
def _subscriber(settings: Settings) -> Subscriber:
    """One per process and settings, so it remembers the Cluster nodes it has seen."""
    return Subscriber(settings)
