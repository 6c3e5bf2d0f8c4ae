"""Sign-in, sign-out and security headers, in front of Gradio (an ASGI middleware on its FastAPI app).

It takes over what Gradio's own routes do badly for a shared server:
- POST /login: refused from another site's page (Origin/Referer), throttled per user name and per client address
  (app/ui/throttle.py), the scrypt check run in a small thread pool off the event loop (so guessing cannot stall
  the page for everyone), a session that expires and ends when the account changes (app/ui/sessions.py), and
  SameSite=Lax cookies. Every refusal is one log line.
- GET / while logged out: a plain login form whose messages say what happened ("Too many failed sign-ins. Try
  again in 8 s."); Gradio's login page can only say "Incorrect Credentials".
- POST /logout ends the session (same-site only); GET /logout only shows a button for it, so a link or an image
  on another page cannot log anyone out.
- Every response: X-Frame-Options DENY, CSP frame-ancestors 'none' (no clickjacking), nosniff, a same-origin
  referrer policy. No script-src: Gradio's page needs inline scripts, so such a policy would protect nothing.
"""
from __future__ import annotations

import asyncio
import html
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.ui.sessions import SessionPolicy, SessionTable, cookie_names, session_token
from app.ui.throttle import LoginThrottle, ThrottlePolicy
from app.users import UserError, UserStore

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
MAX_LOGIN_BODY = 16 * 1024
INCORRECT = "Incorrect user name or password."
FOREIGN = "Sign-in refused: the request came from another site."
BUSY = "Too many sign-ins at once. Try again in a few seconds."
TARPIT_S = 3.0  # a locked-out attempt is answered after this long (at most): a guessing loop slows to its pace
# (1 s let 10 closed-loop guessers send 10 requests/s, which cost 8 users' answers 5-19% on 2 cores; 3 s: -7 to +9%)
TARPIT_MAX = 256  # attempts held at once at most; beyond, refused at once


def _default_concurrency() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))  # leave at least half the cores to everyone else


@dataclass
class LoginPolicy:
    """Everything the guard can be tuned with (tests use short times)."""

    sessions: SessionPolicy = field(default_factory=SessionPolicy.from_env)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    concurrent_checks: int = field(default_factory=_default_concurrency)
    max_waiting: int = 32  # password checks queued at most; more are refused at once with BUSY
    tarpit_s: float = TARPIT_S


class LoginGuard:
    """The state behind the middleware: sessions, throttle, password checks. One per server."""

    def __init__(self, users: UserStore, policy: LoginPolicy | None = None, message: str = "") -> None:
        self.users = users
        self.policy = policy or LoginPolicy()
        self.message = message  # HTML above the login form
        self.sessions = SessionTable(users, self.policy.sessions)
        self.throttle = LoginThrottle(self.policy.throttle)
        self._pool = ThreadPoolExecutor(max_workers=self.policy.concurrent_checks, thread_name_prefix="gw-login")
        self._waiting = 0  # touched on the event loop only
        self._held = 0  # locked-out attempts being held (policy.tarpit_s); event loop only

    def middleware(self):
        """For FastAPI(middleware=[...]) (launch's app_kwargs)."""
        from starlette.middleware import Middleware

        return Middleware(LoginMiddleware, guard=self)

    def install(self, gradio_app) -> None:
        """Make Gradio read its sessions from our table (done again if Gradio ever replaces it)."""
        if gradio_app.tokens is not self.sessions:
            gradio_app.tokens = self.sessions

    async def check_password(self, name: str, password: str) -> bool | None:
        """True/False; None when too many checks are already waiting."""
        if self._waiting >= self.policy.max_waiting:
            return None
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._authenticate, name, password)
        finally:
            self._waiting -= 1

    def _authenticate(self, name: str, password: str) -> bool:
        try:
            return self.users.authenticate(name, password) is not None
        except UserError as exc:
            log.warning("%s", exc)
            return False

    async def hold(self, wait: float) -> None:
        """Answer a locked-out attempt only after min(wait, policy.tarpit_s): refusing at once would let a client loop
        hundreds of times a second, each answer costing the event loop as much as a page request."""
        if self._held >= TARPIT_MAX:
            return
        self._held += 1
        try:
            await asyncio.sleep(min(wait, self.policy.tarpit_s))
        finally:
            self._held -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LoginMiddleware:
    def __init__(self, app, guard: LoginGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        gradio_app = scope.get("app")
        if gradio_app is None or not hasattr(gradio_app, "tokens") or getattr(gradio_app, "auth", None) is None:
            await self.app(scope, receive, send_with_headers)
            return
        self.guard.install(gradio_app)
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        request = Request(scope, receive)
        if path == "/login" and method == "POST":
            response = await self._login(request, gradio_app)
        elif path == "/logout" and method == "POST":
            response = self._logout(request, gradio_app)
        elif path == "/logout" and method in ("GET", "HEAD"):
            response = HTMLResponse(_page("Log out of Groundwork?", _LOGOUT_FORM))
        elif path == "/" and method == "GET" and self._user(request, gradio_app) is None:
            response = HTMLResponse(_login_page(self.guard.message))
        else:
            await self.app(scope, receive, send_with_headers)
            return
        await response(scope, receive, send_with_headers)

    def _user(self, request: Request, gradio_app) -> str | None:
        return self.guard.sessions.get(session_token(request, gradio_app))

    async def _login(self, request: Request, gradio_app) -> Response:
        guard, client = self.guard, (request.client.host if request.client else "unknown")
        wants_html = "text/html" in request.headers.get("accept", "")

        def refuse(status: int, text: str, name: str = "", reason: str = "", retry: float = 0) -> Response:
            log.warning("sign-in refused for %r from %s: %s", name, client, reason or text)
            if wants_html:
                response = HTMLResponse(_login_page(guard.message, text, name), status_code=status)
            else:
                response = JSONResponse({"detail": text}, status_code=status)
            if retry:
                response.headers["Retry-After"] = str(int(retry + 0.999))
            return response

        if not same_origin(request.headers):
            source = request.headers.get("origin") or request.headers.get("referer")
            return refuse(403, FOREIGN, reason=f"foreign origin {source!r}")
        wait = guard.throttle.client_wait(client)
        if wait:
            await guard.hold(wait)
            wait = guard.throttle.client_wait(client)  # a lock that ended while held lets the attempt through
            if wait:
                return refuse(429, too_many(wait), reason="client locked out", retry=wait)
        if int(request.headers.get("content-length") or 0) > MAX_LOGIN_BODY:
            return refuse(413, INCORRECT, reason="request too large")
        try:
            form = await request.form(max_files=0, max_fields=8)
            name, password = str(form.get("username") or "").strip(), str(form.get("password") or "")
        except Exception as exc:  # a malformed body: one line, no traceback
            return refuse(400, INCORRECT, reason=f"unreadable form ({type(exc).__name__})")
        wait = guard.throttle.user_wait(name)
        if wait:
            await guard.hold(wait)
            wait = guard.throttle.user_wait(name)
            if wait:
                return refuse(429, too_many(wait), name, "user name locked out", retry=wait)
        ok = await guard.check_password(name, password) if name and password else False
        if ok is None:
            return refuse(503, BUSY, name, "too many checks waiting", retry=2)
        if not ok:
            failures, _ = guard.throttle.failed(name, client)
            return refuse(400, INCORRECT, name, f"wrong user name or password ({failures} in a row)")
        guard.throttle.succeeded(name)
        token = secrets.token_urlsafe(32)
        guard.sessions.issue(name, token)
        log.info("%r signed in from %s", name, client)
        response = RedirectResponse("./", status_code=303) if wants_html else JSONResponse({"success": True})
        for key, secure in zip(cookie_names(gradio_app), (True, False)):
            response.set_cookie(key, token, httponly=True, samesite="lax", secure=secure, path="/")
        return response

    def _logout(self, request: Request, gradio_app) -> Response:
        if not same_origin(request.headers):
            log.warning("logout refused: foreign origin %r", request.headers.get("origin"))
            return HTMLResponse(_page("Not logged out", "<p>That request came from another site.</p>"),
                                status_code=403)
        name = self.guard.sessions.end(session_token(request, gradio_app))
        if name:
            log.info("%r logged out", name)
        response = RedirectResponse("./", status_code=303)
        for key in cookie_names(gradio_app):
            response.delete_cookie(key, path="/")
        return response


def same_origin(headers) -> bool:
    """False when a browser says the request comes from a page of another site.

    Browsers send Origin with every POST (Referer when a privacy setting strips Origin); a request with neither is
    not from a browser page (curl, gradio_client) and cannot carry a victim's cookies against their will.
    A reverse proxy that rewrites Host should pass the public one in X-Forwarded-Host.
    """
    hosts = {h.strip().lower() for h in (headers.get("host", ""), headers.get("x-forwarded-host", "")) if h.strip()}
    origin = headers.get("origin")
    source = origin if origin is not None else headers.get("referer")
    if source is None:
        return True
    return source != "null" and urlsplit(source).netloc.lower() in hosts


def too_many(wait: float) -> str:
    return f"Too many failed sign-ins. Try again in {int(wait + 0.999)} s."


_STYLE = """<style>
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f8fafc;color:#0f172a}
main{max-width:420px;margin:12vh auto;padding:28px;background:#fff;border:1px solid #e2e8f0;border-radius:12px}
label{display:block;font-size:14px;font-weight:600;margin:14px 0 4px}
input{box-sizing:border-box;width:100%;padding:9px 10px;border:1px solid #cbd5e1;border-radius:8px;font-size:15px}
button{margin-top:18px;width:100%;padding:10px;border:0;border-radius:8px;background:#0f766e;color:#fff;
font-size:15px;font-weight:600;cursor:pointer}
.gw-login-error{margin:16px 0 0;padding:9px 11px;border-radius:8px;background:#fef2f2;color:#991b1b;font-size:14px}
</style>"""
_LOGOUT_FORM = ('<form method="post" action="logout"><button type="submit" id="gw-logout-confirm">Log out</button>'
                '</form><p><a href="./">Back to Groundwork</a></p>')


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{_STYLE}</head>'
            f'<body><main>{body}</main></body></html>')


def _login_page(message: str, error: str = "", name: str = "") -> str:
    error_html = f'<p class="gw-login-error" id="gw-login-error" role="alert">{html.escape(error)}</p>' if error else ""
    return _page("Groundwork: sign in", f"""{message}{error_html}
<form method="post" action="login" id="gw-login">
<label for="gw-user">User name</label>
<input id="gw-user" name="username" type="text" autocomplete="username" required value="{html.escape(name)}"
 autofocus>
<label for="gw-password">Password</label>
<input id="gw-password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>""")
