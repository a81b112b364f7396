"""The pages (GET): rendered on the server from the poller's last reading or a bounded
query, then kept live in the browser by the event stream (``/events``)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shadows.core.execution import now_ms
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.dashboard.context import Served, dashboard_of
from shadows.dashboard.failures import failed_page
from shadows.dashboard.formatting import safe_url
from shadows.dashboard.lookup import find_task
from shadows.dashboard.poller import TICK_RUNNING
from shadows.dashboard.scheduled import scheduled_page
from shadows.operations.strikes import OPERATORS

if TYPE_CHECKING:
    from shadows.operations.strikes import Strike

#: The cookie that carries the outcome of an action to the page it returns to.
NOTICE_COOKIE = "shadows_dashboard_notice"
#: How long a page waits for the poller's first reading.
FIRST_READING = 3.0


def read_notice(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    try:
        notice = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return {"text": str(notice["text"]), "ok": bool(notice["ok"])}
    except (ValueError, KeyError, TypeError):
        return None


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """A page with what every page shows: the shadow, the login, the notice, the nav."""
    dashboard = dashboard_of(request)
    guard = dashboard.guard
    session = guard.session(request)
    notice = read_notice(request)
    response = dashboard.templates.TemplateResponse(
        request,
        template,
        {
            "root": str(request.scope.get("root_path", "")),
            "shadow_name": dashboard.shadow.name,
            "shadow_url": safe_url(dashboard.shadow.url),
            "actions_enabled": guard.enabled,
            "session": session,
            "csrf": guard.csrf_token(session) if session else "",
            "can_act": session is not None,
            "notice": notice,
            "now": now_ms(),
            "error": dashboard.poller.error,
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **context,
        },
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )
    if notice is not None:
        response.delete_cookie(NOTICE_COOKIE, path=_cookie_path(request))
    return response


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + "/"


async def _pulse(request: Request) -> Any:
    poller = dashboard_of(request).poller
    await poller.first_reading(FIRST_READING)
    return poller.pulse


async def overview(request: Request) -> Response:
    dashboard = dashboard_of(request)
    pulse = await _pulse(request)
    table = dashboard.poller.task_table(pulse) if pulse is not None else {"since": 0, "rows": []}
    return render(request, "overview.html", nav="overview", pulse=pulse, table=table)


async def running(request: Request) -> Response:
    pulse = await _pulse(request)
    tasks = pulse.running[:TICK_RUNNING] if pulse is not None else ()
    return render(request, "running.html", nav="running", pulse=pulse, tasks=tasks)


async def workers(request: Request) -> Response:
    pulse = await _pulse(request)
    return render(request, "workers.html", nav="workers", pulse=pulse)


def _int(text: str | None, default: int = 0) -> int:
    try:
        return max(0, int(text)) if text else default
    except ValueError:
        return default


async def scheduled(request: Request) -> Response:
    dashboard = dashboard_of(request)
    params = request.query_params
    text = params.get("q", "").strip()
    task = params.get("task", "").strip()
    size = dashboard.settings.page_size
    page = await scheduled_page(dashboard.shadow, _int(params.get("start")), size, text, task)
    pulse = dashboard.poller.pulse
    names = sorted({name for w in pulse.workers for name in w.tasks}) if pulse else []
    names = sorted(set(names) | set(dashboard.shadow.tasks) | ({task} if task else set()))
    return render(
        request,
        "scheduled.html",
        nav="scheduled",
        page=page,
        size=size,
        text=text,
        task=task,
        task_names=names,
    )


async def task_page(request: Request) -> Response:
    dashboard = dashboard_of(request)
    key = request.query_params.get("key", "")
    if not key:
        return render(request, "missing.html", 400, nav="", what="Give a task key: ?key=...")
    view = await find_task(dashboard.shadow, key)
    status = 200 if view.exists else 404
    return render(request, "task.html", status, nav="", view=view)


async def failed(request: Request) -> Response:
    dashboard = dashboard_of(request)
    size = dashboard.settings.page_size
    page = await failed_page(dashboard.shadow, _int(request.query_params.get("start")), size)
    return render(request, "failed.html", nav="failed", page=page, size=size)


def strike_id(strike: Strike, dashboard: Served) -> str:
    """A short stable name of a strike for the restore form (never its encoded value,
    which may be a codec payload that must not come back from a browser)."""
    encoded = strike.encode(dashboard.shadow.payloads)
    return hashlib.sha256(encoded.encode()).hexdigest()[:24]


async def strikes(
    request: Request, form: dict[str, str] | None = None, problem: str = ""
) -> Response:
    dashboard = dashboard_of(request)
    current = await dashboard.shadow.strikes()
    pulse = dashboard.poller.pulse
    names = sorted({name for w in pulse.workers for name in w.tasks}) if pulse else []
    return render(
        request,
        "strikes.html",
        400 if problem else 200,
        nav="strikes",
        strikes=[(strike, strike_id(strike, dashboard)) for strike in current],
        operators=list(OPERATORS),
        task_names=sorted(set(names) | set(dashboard.shadow.tasks)),
        form=form or {},
        problem=problem,
    )


async def login_form(request: Request) -> Response:
    return render(request, "login.html", nav="", next=request.query_params.get("next", ""))


async def state(request: Request) -> Response:
    """The last tick as JSON, for scripts (the same document the event stream sends)."""
    poller = dashboard_of(request).poller
    await _pulse(request)
    return Response(poller.tick or "{}", media_type="application/json")


async def events(request: Request) -> Response:
    """Server-sent events: the history once, then every tick of the shared poller."""
    poller = dashboard_of(request).poller

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for event, data in poller.events():
            yield f"event: {event}\ndata: {data}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def unavailable(request: Request, error: Exception) -> Response:
    """Redis could not answer a page's query."""
    kind = "unreachable" if isinstance(error, CONNECTION_ERRORS) else "refused the query"
    message = f"Redis {kind}: {error}"
    if request.url.path.startswith(("/api", "/events")) or "json" in request.headers.get(
        "accept", ""
    ):
        return JSONResponse({"error": message}, status_code=503)
    return render(request, "missing.html", 503, nav="", what=message)


def routes() -> list[Route]:
    return [
        Route("/", overview, name="overview"),
        Route("/running", running, name="running"),
        Route("/scheduled", scheduled, name="scheduled"),
        Route("/task", task_page, name="task"),
        Route("/workers", workers, name="workers"),
        Route("/failed", failed, name="failed"),
        Route("/strikes", strikes, name="strikes"),
        Route("/login", login_form, name="login_form"),
        Route("/events", events, name="events"),
        Route("/api/state", state, name="state"),
    ]
