"""Refused actions are logged as one line, not as a traceback.

Gradio prints the full traceback of every exception an event raises (queueing.py:
`if not isinstance(e, Error) or e.print_exception: traceback.print_exc()`), including the gr.Error raised on
purpose: "Only administrators can do this." (app/ui/auth.py), an admin action's AdminError shown on the page,
and Gradio's own input checks ("Value: 'injection' is not in the list of choices", "less than the minimum
value"). One refused click wrote ~30 lines to the server log, and a scripted attacker could bury real errors.

`install(blocks)` wraps Blocks.process_api, the one call every event (queued, /call, /run, each step of a
generator) goes through, preprocessing included: a gr.Error, or an expected one-line failure that escaped a
handler (GroundworkError: UserError, AdminError, LibraryError, ...), is logged as ONE line naming the event
and the user, and reaches Gradio as a gr.Error with print_exception=False (the page still shows the message).
Anything else is a real failure: it propagates untouched and Gradio prints its traceback.
"""
from __future__ import annotations

import functools
import logging

import gradio as gr

from ingest.errors import GroundworkError

log = logging.getLogger("app.ui.refused")


def refusal(exc: BaseException) -> gr.Error | None:
    """The gr.Error to raise for an expected refusal, None for a real failure (its traceback is wanted)."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, GroundworkError):
        return gr.Error(str(exc) or type(exc).__name__)
    return None


def _user(request) -> str:
    if isinstance(request, list):
        request = request[0] if request else None
    return getattr(request, "username", None) or "-"


def install(blocks: gr.Blocks) -> None:
    """Log every refusal of `blocks`' events in one line, without a traceback (see the module docstring)."""
    if getattr(blocks, "_refusals_quiet", False):
        return
    process_api = blocks.process_api

    @functools.wraps(process_api)
    async def quiet(block_fn, inputs, state=None, request=None, *args, **kwargs):
        try:
            return await process_api(block_fn, inputs, state, request, *args, **kwargs)
        except Exception as exc:
            error = refusal(exc)
            if error is None or not error.print_exception:  # a real failure, or a refusal that chose its own way
                raise
            error.print_exception = False
            fn = blocks.fns.get(block_fn) if isinstance(block_fn, int) else block_fn
            name = getattr(fn, "api_name", None) or getattr(fn, "name", None) or "event"
            message = " ".join(str(error.message).split())  # one line, whatever the message holds
            log.warning("refused %s for %s: %s (%s)", name, _user(request), message, type(exc).__name__)
            if error is exc:
                raise
            raise error from None

    blocks.process_api = quiet
    blocks._refusals_quiet = True
