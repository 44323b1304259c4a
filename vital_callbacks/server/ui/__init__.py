"""The local web UI that ``vital-callbacks serve`` shows at ``/``: overview, traces, live tail, budgets.

Server-rendered HTML (Jinja2) over the same store and the same tenant-scoped tokens as the HTTP API;
one stylesheet and one small script of our own, served from the package: no build step, no CDN, no
third-party assets, works offline. Signing in stores the token in an ``HttpOnly``, ``SameSite=Strict``
cookie; a tenant's token sees that tenant only, in every page, chart, link and in the API calls the
pages make (another tenant's trace is "not found", as if it did not exist). An admin token sees all
and picks a tenant with ``?tenant=``. Every filter is in the URL, so links can be shared.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine

from vital_callbacks import analytics
from vital_callbacks.server._auth import COOKIE, Principal, TokenTable
from vital_callbacks.server._store import Store
from vital_callbacks.server.ui import _view
from vital_callbacks.server.ui._render import environment

WINDOWS = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30}
_STATIC = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
_PAGE = 50
_GROUPS = ("model", "graph", "node", "tool")
_STATUSES = ("success", "error", "interrupted", "cancelled")


_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "style-src 'self' 'unsafe-inline'; "
                                       "frame-ancestors 'none'; form-action 'self'"}
"""Our own script only (no inline script; inline style attributes place the waterfall's bars), never
framed, no token in a referrer."""
_MAX_LOGIN_BODY = 4096
_MAX_SPANS = 5000
"""Rows a trace page draws (a runaway agent's trace can hold far more; the page says how many)."""
_QUERIES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vital-ui")
"""Where a page's independent queries run side by side (bounded: the reader's pool holds 10)."""


class _SignIn(Exception):
    """No valid token with the request: the page answers with the sign-in form instead."""


def ui_router(store: Store, table: TokenTable, now: Callable[[], datetime],
              budgets_file: Path | None = None, budget_redis_url: str | None = None) -> APIRouter:
    """The pages, sign-in and static files; ``budgets_file`` (``VITAL_BUDGETS_FILE``) for the budgets."""
    env = environment()
    router = APIRouter(include_in_schema=False)
    guard_box: list[Any] = []

    def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        presented = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        found = table.lookup(presented) if presented else None
        if found is None:
            raise _SignIn()
        return found

    def tenant_of(caller: Principal, request: Request) -> str | None:
        requested = request.query_params.get("tenant") or None
        return caller.scope(requested)  # 403 for another tenant's

    tenant_list: list[Any] = [0.0, []]

    def known_tenants() -> list[str]:
        """The admin's tenant picker: asked again after 30 s (a new tenant shows up that late)."""
        if time.monotonic() - tenant_list[0] > 30:
            tenant_list[:] = [time.monotonic(), store.run(analytics.tenants)]
        return list(tenant_list[1])

    def page(name: str, request: Request, caller: Principal, tenant: str | None, **context: Any) -> HTMLResponse:
        params = {k: v for k, v in request.query_params.items()}
        tenants = known_tenants() if caller.is_admin else []
        html = env.get_template(name).render(request=request, params=params, caller=caller, tenant=tenant,
                                             tenants=tenants, path=request.url.path, **context)
        return HTMLResponse(html, headers=_HEADERS)

    def guarded(render: Callable[[Request, Principal], Response]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                caller = principal(request)
            except _SignIn:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=status.HTTP_303_SEE_OTHER)
            try:
                return render(request, caller)
            except HTTPException as exc:
                html = env.get_template("error.html").render(request=request, params={}, caller=caller,
                                                             tenant=caller.tenant_id, tenants=[], path="",
                                                             code=exc.status_code, message=exc.detail)
                return HTMLResponse(html, status_code=exc.status_code)

        return endpoint

    guard_lock = threading.Lock()

    def budget_statuses(tenant: str | None) -> tuple[list[_view.BudgetRow], str | None]:
        """The budgets the caller may see, with the unpriced calls each leaves out; or why there are none
        (a file that cannot be read is said on the page, not a failed page)."""
        if budgets_file is None or not budgets_file.is_file():
            return [], None
        from vital_callbacks.budgets import BudgetFileError, BudgetGuard, load_budgets

        try:
            version = budgets_file.stat().st_mtime_ns
            with guard_lock:  # one guard per version of the file (an edit is picked up)
                if not guard_box or guard_box[0] != version:
                    url = store.engine().url.render_as_string(hide_password=False)
                    old = guard_box[1] if guard_box else None
                    guard_box[:] = [version, BudgetGuard(load_budgets(budgets_file), database_url=url, refresh_s=0,
                                                         redis_url=budget_redis_url)]
                    if old is not None:
                        old.close()
                guard = guard_box[1]
            guard.refresh()
            statuses = _view.visible_budgets(guard.status(now()), tenant)
        except (BudgetFileError, OSError) as exc:
            return [], f"VITAL_BUDGETS_FILE cannot be read: {exc}"
        return store.run(lambda e: _view.with_unpriced(e, statuses)), None

    # -- sign-in ---------------------------------------------------------------------------------
    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/", failed: int = 0) -> HTMLResponse:
        html = env.get_template("login.html").render(request=request, params={}, caller=None, tenant=None,
                                                     tenants=[], path="/login", next=_safe(next), failed=failed)
        return HTMLResponse(html, status_code=401 if failed else 200)

    @router.post("/login")
    async def login(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "sign in from this site's own form")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_LOGIN_BODY:
                raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "a sign-in form is small")
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = _safe((form.get("next") or ["/"])[0])
        if not token or table.lookup(token) is None:
            return RedirectResponse(f"/login?failed=1&next={quote(target)}", status_code=status.HTTP_303_SEE_OTHER)
        response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                            max_age=12 * 3600)
        return response

    @router.get("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE)
        return response

    @router.get("/ui/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        body = resources.files("vital_callbacks.server.ui").joinpath("static", name).read_bytes()
        return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})

    # -- pages -----------------------------------------------------------------------------------
    def overview(request: Request, caller: Principal) -> Response:
        tenant = tenant_of(caller, request)
        window = _window(request, "24h")
        hours = WINDOWS[window]
        until = now()
        since = until - timedelta(hours=hours)
        midnight = until.replace(hour=0, minute=0, second=0, microsecond=0)
        trend_since = midnight - timedelta(days=max(13, hours // 24 - 1))
        groups = ("tenant", *_GROUPS) if tenant is None else _GROUPS

        # Independent aggregates: asked at once, on the reader's pool (the page waits for the slowest,
        # not for their sum).
        asked: dict[str, Callable[[Engine], Any]] = {
            "today": lambda e: analytics.total_row(e, since=midnight, until=until, tenant_id=tenant),
            "month": lambda e: analytics.month_projection(e, now=until, tenant_id=tenant),
            "total": lambda e: analytics.total_row(e, since=since, until=until, tenant_id=tenant),
            "days": lambda e: _view.trend(
                analytics.daily_cost_rows(e, since=trend_since, until=until, tenant_id=tenant),
                trend_since.date(), until.date()),
        }
        for g in groups:
            asked[f"by {g}"] = functools.partial(_grouped, by=g, since=since, until=until, tenant=tenant)
        futures = {name: _QUERIES.submit(store.run, fn) for name, fn in asked.items()}
        data = {name: future.result() for name, future in futures.items()}
        data["groups"] = {g: data.pop(f"by {g}") for g in groups}
        budgets, budget_problem = budget_statuses(tenant)
        return page("overview.html", request, caller, tenant, window=window, windows=WINDOWS, budgets=budgets,
                    budget_problem=budget_problem, chart=(_view.CHART_WIDTH, _view.CHART_HEIGHT), **data)

    def traces(request: Request, caller: Principal) -> Response:
        tenant = tenant_of(caller, request)
        q = request.query_params
        window = _window(request, "7d")
        until = now()
        since = until - timedelta(hours=WINDOWS[window])
        state = q.get("status") or None
        if state is not None and state not in _STATUSES:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"status must be one of {', '.join(_STATUSES)}")
        before = _cursor(q.get("before"))
        try:
            min_cost = Decimal(q["min_cost"]) if q.get("min_cost") else None
        except InvalidOperation:
            min_cost = Decimal("NaN")
        if min_cost is not None and not min_cost.is_finite():
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "min_cost must be a number of USD")
        rows = store.run(lambda e: analytics.trace_list_rows(
            e, tenant_id=tenant, user_id=q.get("user") or None, session_id=q.get("session") or None,
            graph=q.get("graph") or None, status=state, min_cost_usd=min_cost, since=since, until=until,
            before=before, limit=_PAGE + 1))
        more = len(rows) > _PAGE
        rows = rows[:_PAGE]
        next_cursor = f"{rows[-1].started_at.isoformat()}|{rows[-1].trace_id}" if more and rows else None
        return page("traces.html", request, caller, tenant, rows=rows, next_cursor=next_cursor, window=window,
                    windows=WINDOWS, statuses=_STATUSES)

    def trace_page(request: Request, caller: Principal) -> Response:
        trace_id = request.path_params["trace_id"]
        tenant = tenant_of(caller, request) if caller.is_admin else caller.tenant_id
        found = store.run(lambda e: analytics.trace_rows(e, trace_id, tenant_id=tenant))
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such trace")
        bars = _view.waterfall(found)
        return page("trace.html", request, caller, tenant, trace=found, bars=bars[:_MAX_SPANS], spans=len(bars))

    def tail(request: Request, caller: Principal) -> Response:
        tenant = tenant_of(caller, request)
        level = "error" if request.query_params.get("level") == "error" else "all"
        rows = store.run(lambda e: analytics.recent_calls_rows(e, limit=_PAGE, errors_only=level == "error",
                                                               tenant_id=tenant))
        return page("tail.html", request, caller, tenant, rows=rows, level=level)

    def tail_rows(request: Request, caller: Principal) -> Response:
        """The live tail's newest rows as HTML, rendered as the page's own: the script only inserts them."""
        tenant = tenant_of(caller, request)
        errors_only = request.query_params.get("level") == "error"
        rows = store.run(lambda e: analytics.recent_calls_rows(e, limit=_PAGE, errors_only=errors_only,
                                                               tenant_id=tenant))
        params = {k: v for k, v in request.query_params.items()}
        html = env.get_template("_tail_rows.html").render(rows=rows, params=params)
        return HTMLResponse(html, headers=_HEADERS)

    def budgets(request: Request, caller: Principal) -> Response:
        tenant = tenant_of(caller, request)
        until = now()
        scores = store.run(lambda e: analytics.quality_summary_rows(e, since=until - timedelta(days=7), until=until,
                                                                    tenant_id=tenant))
        budget_rows, budget_problem = budget_statuses(tenant)
        return page("budgets.html", request, caller, tenant, budgets=budget_rows, budget_problem=budget_problem,
                    scores=scores)

    router.add_api_route("/", guarded(overview), methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/traces", guarded(traces), methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/traces/{trace_id}", guarded(trace_page), methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/tail", guarded(tail), methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/tail/rows", guarded(tail_rows), methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/budgets", guarded(budgets), methods=["GET"], response_class=HTMLResponse)
    return router


def _grouped(engine: Engine, *, by: str, since: datetime, until: datetime, tenant: str | None) -> Any:
    return analytics.cost_by_rows(engine, by, since=since, until=until, tenant_id=tenant, limit=20)


def _window(request: Request, default: str) -> str:
    window = request.query_params.get("window", default)
    return window if window in WINDOWS else default


def _safe(target: str) -> str:
    """Only a path on this site (no ``//host`` or scheme): a sign-in link cannot send anyone elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _cursor(text: str | None) -> tuple[datetime, str] | None:
    if not text or "|" not in text:
        return None
    at, _, run_id = text.partition("|")
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "before is not a page cursor") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), run_id
