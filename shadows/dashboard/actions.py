"""The actions (POST): strike, restore, cancel, retry, purge, and logging in and out.

Each one is authorized by the :class:`~shadows.dashboard.auth.Guard` (token, session,
CSRF token, origin), then logged with who took it, then answered: a browser is sent back
to the page it came from with a notice, a script (``Accept: application/json``) gets
``{"ok": ..., "message": ...}``. A refusal is logged too, and changes nothing.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from shadows.core.execution import MessageError
from shadows.dashboard.auth import SESSION_COOKIE, Operator, Refused, clean_name
from shadows.dashboard.context import dashboard_of
from shadows.dashboard.pages import NOTICE_COOKIE, render, strike_id, strikes
from shadows.operations.strikes import parse_operator, parse_value

logger = logging.getLogger("shadows.dashboard")

#: Largest form or JSON body an action accepts.
MAX_BODY = 64 * 1024

Form = dict[str, str]


class Rejected(Exception):
    """An action that was understood and authorized but cannot be done as asked."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


async def read_form(request: Request) -> Form:
    """The fields of a url-encoded form or a JSON object (values as text)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Rejected(f"the request is larger than {MAX_BODY} bytes", 413)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            document = json.loads(body or b"{}")
        except ValueError as error:
            raise Rejected(f"the request is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise Rejected("the request must be a JSON object")
        return {str(k): "" if v is None else str(v) for k, v in document.items()}
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise Rejected("the form is not UTF-8") from None


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def back_to(request: Request, form: Form) -> str:
    """Where the browser goes after an action: the page it came from, inside the
    dashboard (never another site), else the overview."""
    root = str(request.scope.get("root_path", ""))
    target = form.get("next", "")
    if target.startswith(root + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return root + "/"


def notice_cookie(text: str, ok: bool) -> str:
    raw = json.dumps({"text": text, "ok": ok}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def answer(request: Request, form: Form, ok: bool, message: str, status: int = 200) -> Response:
    if wants_json(request):
        return JSONResponse({"ok": ok, "message": message}, status_code=status)
    if not ok and status in (401, 403):
        return render(request, "missing.html", status, nav="", what=f"Refused: {message}")
    response = RedirectResponse(back_to(request, form), status_code=303)
    response.set_cookie(
        NOTICE_COOKIE,
        notice_cookie(message, ok),
        max_age=60,
        path=str(request.scope.get("root_path", "")) + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


Deed = Callable[[Request, Form], Awaitable[str]]


def action(name: str, deed: Deed) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that authorizes, performs ``deed``, logs and answers."""

    async def endpoint(request: Request) -> Response:
        dashboard = dashboard_of(request)
        address = request.client.host if request.client else "?"
        try:
            form = await read_form(request)
            operator = dashboard.guard.authorize(request, form.get("csrf"))
        except Refused as refusal:
            logger.warning("Refused %s on %s from %s: %s", name, dashboard.shadow.name, address,
                           refusal.reason)  # fmt: skip
            return answer(request, {}, False, refusal.reason, refusal.status)
        except Rejected as rejection:
            return answer(request, {}, False, str(rejection), rejection.status)
        try:
            message = await deed(request, form)
        except Rejected as rejection:
            logger.info("%s: %s failed: %s", operator, name, rejection)
            if name == "strike" and not wants_json(request):
                return await strikes(request, form, str(rejection))
            return answer(request, form, False, str(rejection), rejection.status)
        logger.info("%s: %s on shadow %s", operator, message, dashboard.shadow.name)
        return answer(request, form, True, message)

    endpoint.__name__ = f"{name}_action"
    return endpoint


def _key(form: Form) -> str:
    key = form.get("key", "")
    if not key:
        raise Rejected("give the task's key")
    return key


async def do_strike(request: Request, form: Form) -> str:
    shadow = dashboard_of(request).shadow
    task = form.get("task", "").strip()
    parameter = form.get("parameter", "").strip()
    function = None if task in ("", "*") else task
    try:
        if not parameter:
            if function is None:
                raise Rejected("give a task, a parameter, or both")
            changed = await shadow.strike(function)
            what = function
        else:
            operator = parse_operator(form.get("operator", "=="))
            value = parse_value(form.get("value", ""))
            changed = await shadow.strike(function, parameter, operator, value)
            what = f"{function or '*'}({parameter} {operator} {value!r})"
    except (ValueError, TypeError) as error:
        raise Rejected(str(error)) from None
    return f"struck {what}" if changed else f"{what} was already struck"


async def do_restore(request: Request, form: Form) -> str:
    dashboard = dashboard_of(request)
    wanted = form.get("id", "")
    for strike in await dashboard.shadow.strikes():
        if strike_id(strike, dashboard) == wanted:
            await dashboard.shadow.restore(
                strike.function, strike.parameter, strike.operator, strike.value
            )
            return f"restored {strike}"
    raise Rejected("no such strike is in effect (restored already?)", 404)


async def do_cancel(request: Request, form: Form) -> str:
    key = _key(form)
    if not await dashboard_of(request).shadow.cancel(key):
        raise Rejected(f"task {key!r} is not waiting or running (ended, or gone)", 409)
    return f"cancelled task {key!r}"


async def do_retry(request: Request, form: Form) -> str:
    key = _key(form)
    try:
        outcome = await dashboard_of(request).shadow.retry_failed(key)
    except KeyError:
        raise Rejected(f"no dead letter {key!r}", 404) from None
    except (MessageError, ValueError) as error:
        raise Rejected(f"cannot retry {key!r}: {error}") from None
    if outcome == "exists":
        raise Rejected(f"a task with key {key!r} is already scheduled, queued or running", 409)
    return f"retried dead letter {key!r} ({outcome})"


async def do_purge(request: Request, form: Form) -> str:
    shadow = dashboard_of(request).shadow
    if form.get("all") == "1":
        return f"purged all {await shadow.purge_failed()} dead letters"
    key = _key(form)
    if not await shadow.purge_failed(key):
        raise Rejected(f"no dead letter {key!r}", 404)
    return f"purged dead letter {key!r}"


async def login(request: Request) -> Response:
    dashboard = dashboard_of(request)
    guard = dashboard.guard
    address = request.client.host if request.client else "?"
    try:
        form = await read_form(request)
        if not guard.enabled:
            raise Refused("this dashboard is read-only: no token is configured")
        guard.check_origin(request)
    except (Refused, Rejected) as error:
        return answer(request, {}, False, str(error), getattr(error, "status", 403))
    who = clean_name(form.get("name", ""))
    if not guard.token_matches(form.get("token", "")):
        logger.warning("Failed login to the dashboard of %s from %s", dashboard.shadow.name,
                       address)  # fmt: skip
        return render(request, "login.html", 401, nav="", next=form.get("next", ""),
                      problem="Wrong token.")  # fmt: skip
    logger.info("%s: logged in", Operator(who, address, "session"))
    response = RedirectResponse(back_to(request, form), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        guard.issue(who),
        max_age=guard.lifetime,
        path=str(request.scope.get("root_path", "")) + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse(str(request.scope.get("root_path", "")) + "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=str(request.scope.get("root_path", "")) + "/")
    return response


def routes() -> list[Route]:
    deeds: dict[str, Deed] = {
        "strike": do_strike,
        "restore": do_restore,
        "cancel": do_cancel,
        "retry": do_retry,
        "purge": do_purge,
    }
    return [
        *(
            Route(f"/actions/{name}", action(name, deed), methods=["POST"], name=f"{name}_action")
            for name, deed in deeds.items()
        ),
        Route("/login", login, methods=["POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
    ]
