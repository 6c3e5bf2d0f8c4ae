"""Who is asking: the logged-in user of a request, and the server-side role check.

The page never says who the user is: every handler looks the logged-in name (from Gradio's session cookie)
up again in the users file, so a removed user or a changed role takes effect on the next click. Sign-in itself
(throttled, off the event loop, same-site only) and sessions that end (expiry; password, role or group change;
removal) are app/ui/login_guard.py's and app/ui/sessions.py's: a stale session never reaches a handler.
"""
from __future__ import annotations

from typing import Callable

import gradio as gr

from app.users import User, UserError, UserStore


def make_auth(users: UserStore) -> Callable[[str, str], bool]:
    """The `auth=` callable for Gradio: it makes Gradio require a login. Sign-in requests are answered by
    LoginGuard before they reach Gradio's own /login route, so this runs only if that route is ever called
    without the guard in front of it."""

    def check(username: str, password: str) -> bool:
        try:
            return users.authenticate(username, password) is not None
        except UserError:
            return False

    return check


def current_user(users: UserStore, request: gr.Request | None) -> User:
    """The logged-in user, read from the users file now; gr.Error if there is none."""
    name = getattr(request, "username", None) if request is not None else None
    if not name:
        raise gr.Error("Please log in.")
    try:
        return users.get(name)
    except UserError:
        raise gr.Error("Your account no longer exists. Please log in again.") from None


def require_admin(users: UserStore, request: gr.Request | None) -> User:
    """The logged-in user if they are an admin; otherwise gr.Error (checked on the server for every action)."""
    user = current_user(users, request)
    if not user.is_admin:
        raise gr.Error("Only administrators can do this.")
    return user
