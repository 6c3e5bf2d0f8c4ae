"""Who is asking: Gradio's login checked against the users file, and the server-side role check.

The page never says who the user is: every handler looks the logged-in name (from Gradio's session cookie)
up again in the users file, so a removed user or a changed role takes effect on the next click.
"""
from __future__ import annotations

from typing import Callable

import gradio as gr

from app.users import User, UserError, UserStore


def make_auth(users: UserStore) -> Callable[[str, str], bool]:
    """The `auth=` callable for Gradio's login page."""

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
