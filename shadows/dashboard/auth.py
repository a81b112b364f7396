"""Who may act, and proof that a request is theirs and not another site's.

Pages are read-only for everyone who can reach the dashboard. Actions need the configured
token, either per request (``Authorization: Bearer <token>``, for scripts; the optional
``X-Shadows-Operator`` header names the person) or through a login: the token is checked
once and a session cookie is set, signed with a key derived from the token (so changing
the token logs everyone out), ``HttpOnly`` and ``SameSite=Strict``. Every form of a
logged-in page carries a CSRF token tied to that session, and every action's ``Origin``
(or ``Referer``) must be the dashboard itself or one of ``allowed_origins``. Without a
token configured there is no login and every action is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from shadows.dashboard.settings import DashboardSettings

SESSION_COOKIE = "shadows_dashboard_session"
#: The header scripts may use to say who they act for.
OPERATOR_HEADER = "x-shadows-operator"
#: Longest operator name kept (it goes into log lines).
NAME_LIMIT = 64


class Refused(Exception):
    """An action this request may not take; ``status`` is the HTTP answer."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Session:
    who: str
    expires: int
    #: The cookie's value, which the CSRF token is derived from.
    cookie: str


@dataclass(frozen=True, slots=True)
class Operator:
    """Who takes an action, for the audit log."""

    who: str
    address: str
    via: str

    def __str__(self) -> str:
        return f"{self.who} ({self.via} from {self.address})"


def clean_name(text: str) -> str:
    """A name fit for a log line: printable, trimmed, bounded."""
    printable = "".join(ch for ch in text if ch.isprintable()).strip()
    return printable[:NAME_LIMIT] or "anonymous"


class Guard:
    """Checks tokens, signs sessions and CSRF tokens, and refuses cross-site actions."""

    def __init__(self, settings: DashboardSettings) -> None:
        secret = settings.token.get_secret_value() if settings.token is not None else None
        self._token = secret.encode() if secret is not None else None
        self._key = (
            hashlib.sha256(b"shadows-dashboard-session\0" + self._token).digest()
            if self._token is not None
            else b""
        )
        self.lifetime = int(settings.session_lifetime.total_seconds())
        self.allowed_origins = {_origin(o) for o in settings.allowed_origins}

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def token_matches(self, given: str) -> bool:
        if self._token is None:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    # -- sessions ----------------------------------------------------------------------

    def issue(self, who: str) -> str:
        body = json.dumps({"who": clean_name(who), "exp": int(time.time()) + self.lifetime})
        encoded = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign('session', encoded)}"

    def session(self, request: Request) -> Session | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not self.enabled or not cookie or "." not in cookie:
            return None
        encoded, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign("session", encoded)):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            who, expires = str(body["who"]), int(body["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < time.time():
            return None
        return Session(who, expires, cookie)

    def csrf_token(self, session: Session) -> str:
        return self._sign("csrf", session.cookie)

    def _sign(self, purpose: str, text: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\0{text}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    # -- actions -----------------------------------------------------------------------

    def check_origin(self, request: Request) -> None:
        """Refuse a request another site's page sent (browsers always say where from)."""
        source = request.headers.get("origin") or request.headers.get("referer")
        if source is None:
            return  # not a browser: the token or the CSRF token still decides
        origin = _origin(source)
        own = request.headers.get("host", "").lower()
        if urlsplit(origin).netloc == own or origin in self.allowed_origins:
            return
        raise Refused(f"cross-site request refused (from {origin or 'an opaque origin'})")

    def authorize(self, request: Request, csrf: str | None) -> Operator:
        """Who takes this action, or :class:`Refused`."""
        address = request.client.host if request.client else "?"
        if not self.enabled:
            raise Refused("this dashboard is read-only: no token is configured")
        self.check_origin(request)
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not self.token_matches(given.strip()):
                raise Refused("wrong token", 401)
            who = clean_name(request.headers.get(OPERATOR_HEADER, "token holder"))
            return Operator(who, address, "token")
        session = self.session(request)
        if session is None:
            raise Refused("log in with the dashboard's token to act", 401)
        if not csrf or not hmac.compare_digest(csrf, self.csrf_token(session)):
            raise Refused("the form is stale or was not sent by this dashboard (CSRF token)")
        return Operator(session.who, address, "session")


def _origin(text: str) -> str:
    parts = urlsplit(text.strip())
    if not parts.scheme or not parts.netloc:
        return ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"
