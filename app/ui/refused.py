"""Refused actions are logged as one line, not as a traceback.

Gradio prints the full traceback of every exception an event handler raises (queueing.py:
`if not isinstance(e, Error) or e.print_exception: traceback.print_exc()`), including the gr.Error a handler
raises on purpose ("Only administrators can do this.", "choose a document to remove"). One refused click wrote
~30 lines to the server log, and a scripted attacker could bury real errors under them.

`quiet_refusals(fn)` wraps a handler (plain function or generator): a gr.Error, or an expected one-line
failure (GroundworkError: UserError, AdminError, LibraryError, ...), is logged as ONE line naming the handler,
and re-raised as a gr.Error with print_exception=False, so Gradio shows the message on the page without
printing a traceback. Anything else is a real failure: it propagates untouched and Gradio prints its traceback.
"""
from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from ingest.errors import GroundworkError

log = logging.getLogger("app.ui.refused")


def refusal(exc: BaseException) -> gr.Error | None:
    """The gr.Error to raise for an expected refusal (logged as one line), None for a real failure."""
    if isinstance(exc, gr.Error):
        error = exc
    elif isinstance(exc, GroundworkError):
        error = gr.Error(str(exc) or type(exc).__name__)
    else:
        return None
    error.print_exception = False
    return error


def _log(name: str, request, exc: BaseException, error: gr.Error) -> None:
    user = getattr(request, "username", None) or "-"
    message = " ".join(str(error.message).split())  # one line, whatever the message holds
    log.warning("refused %s for %s: %s (%s)", name, user, message, type(exc).__name__)


def _request_of(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, gr.Request):
            return value
    return None


def quiet_refusals(fn):
    """`fn` with its refusals logged in one line and shown without a traceback (see the module docstring).

    The wrapper keeps fn's signature (functools.wraps), so Gradio still injects gr.Request."""
    name = getattr(fn, "__name__", "handler")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                error = refusal(exc)
                if error is None:
                    raise
                _log(name, _request_of(args, kwargs), exc, error)
                raise error from None

        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            error = refusal(exc)
            if error is None:
                raise
            _log(name, _request_of(args, kwargs), exc, error)
            raise error from None

    return plain
