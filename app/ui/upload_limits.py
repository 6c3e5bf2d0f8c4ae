"""Gradio's upload route, limited: admins only, capped per request, per user and in total, and a cache that empties.

The attack (issue 18, item 7): any logged-in employee could POST files to `/gradio_api/upload` (Gradio checks
only that someone is logged in), 50 MB × 1000 files a request, and the files stayed in Gradio's temp folder
forever. Only the admin tab's "Upload documents" needs that route, so:

- `UploadGuard`, an ASGI middleware on the server, answers a POST to a file-writing route (`.../upload`,
  `.../process_recording`, with any slashes or trailing slash) and any multipart POST (Gradio's
  `/component_server` parses one too, 1000 files read into memory) BEFORE a byte of the body is read: 401 without a
  session, 403 for a user who is not an admin in the users file now, 413 over `request_bytes` (one request), 429
  over `user_bytes` within `window_s` (one user), 507 when the cache holds `total_bytes` or `total_files`
  already. A request without a Content-Length (chunked) is counted as it streams and cut at the same limits.
- The next variation: an event's JSON body may name a file as a FileData, and Gradio fetches it BEFORE the handler
  runs (processing_utils.async_move_files_to_cache: a path that is an http(s) URL is downloaded into the same
  cache), so an employee calling the admin tab's upload event with `{"path": "https://..."}` made the server
  download anything, of any size, though the handler then refused them. UploadGuard reads every other POST body
  (at most `json_bytes`; only JSON is looked into): a FileData from a user who is not an admin is refused (403; no
  feature gives them a file input), and a FileData whose path is a URL is refused for everyone (400; files come
  through the upload route, never fetched).
- `clean_upload_cache` deletes what Gradio's upload folder holds for longer than `cache_age_s` (the
  `<hash>/<name>` folders uploads go to, and the `tmp*` files an aborted upload leaves behind once they stop
  growing); `install` runs it at once (what an earlier run or a crash left) and then every `clean_every_s`.

Why not Gradio's `gr.Blocks(delete_cache=...)` alone: it is read only when launch() builds the server, and it
deletes only the files this process recorded in memory, so a restart or a crash leaves them on disk forever, the
hash folders stay, and the partial files of cut uploads are never seen. The Gradio parts that exist are used:
`max_file_size` (one file, launch_app) and the session lookup (`app.tokens` / `auth_dependency`) that Gradio's
own `/user` route uses. Gradio's static-file workers (GRADIO_NUM_WORKERS), which would serve uploads outside
this middleware, are never started when the app has a login (blocks.launch), and this app always has one.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from starlette.middleware import Middleware
from starlette.requests import Request

from app.ui import refused
from app.ui.sessions import session_token
from app.users import UserError, UserStore

log = logging.getLogger(__name__)

MB = 1_000_000
_GUARDED = {"upload", "process_recording"}  # last segment of the POST routes that write the body to disk
_HASH_DIR = re.compile(r"^[0-9a-f]{32,128}$")  # Gradio's upload folders: <sha hex>/<file name>


@dataclass(frozen=True)
class UploadLimits:
    request_bytes: int = 200 * MB  # one upload request, all its files together
    user_bytes: int = 1_000 * MB  # one user, within window_s
    window_s: float = 3_600.0
    total_bytes: int = 2_000 * MB  # everything in Gradio's upload folder
    total_files: int = 5_000
    cache_age_s: float = 3_600.0  # uploaded files are deleted this long after they arrived
    partial_age_s: float = 300.0  # a partial upload (tmp* file) not written to for this long is abandoned
    clean_every_s: float = 300.0
    json_bytes: int = 16 * MB  # other POST bodies (JSON) read to look for files named in them


@dataclass
class CleanResult:
    files: int = 0
    bytes: int = 0
    folders: int = 0


def clean_upload_cache(folder: Path | str, max_age_s: float, partial_age_s: float | None = None,
                       now: float | None = None, keep: frozenset[str] | set[str] = frozenset()) -> CleanResult:
    """Delete uploads older than max_age_s from Gradio's upload folder (and the hash folders they empty), and
    `tmp*` partial uploads not written to for partial_age_s (default: max_age_s). Paths in `keep` stay.

    Only Gradio's own layout is touched (hash-named folders, top-level tmp* files): anything else in the folder
    (another app's, or Gradio's deep_links) is left alone. Symlinks are removed, never followed."""
    folder = Path(folder)
    now = time.time() if now is None else now
    partial_age_s = max_age_s if partial_age_s is None else partial_age_s
    result = CleanResult()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return result

    def remove(path: str, info: os.stat_result) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        result.files += 1
        result.bytes += info.st_size

    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if entry.is_dir(follow_symlinks=False) and _HASH_DIR.match(entry.name):
            for directory, _, files in os.walk(entry.path, topdown=False):
                for name in files:
                    path = os.path.join(directory, name)
                    if path in keep:
                        continue
                    try:
                        file_info = os.lstat(path)
                    except FileNotFoundError:
                        continue
                    # arrival: Gradio renames the finished upload into place (ctime); never younger than mtime
                    if now - max(file_info.st_ctime, file_info.st_mtime) > max_age_s:
                        remove(path, file_info)
                try:
                    os.rmdir(directory)  # only if empty
                    result.folders += 1
                except OSError:
                    pass
        elif entry.name.startswith("tmp") and not entry.is_dir(follow_symlinks=False):
            if entry.path not in keep and now - info.st_mtime > partial_age_s:
                remove(entry.path, info)
    return result


def cache_usage(folder: Path | str) -> tuple[int, int]:
    """(bytes, files) in Gradio's upload folder."""
    total = count = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
                count += 1
            except FileNotFoundError:
                pass
    return total, count


def _files_named(value, depth: int = 0):
    """The FileData objects in a decoded JSON body (what Gradio moves into its cache before a handler runs)."""
    if depth > 64:
        raise _Refused(400, "Request too deeply nested.")
    if isinstance(value, dict):
        meta = value.get("meta")
        if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
            yield value
        for item in value.values():
            yield from _files_named(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _files_named(item, depth + 1)


def _fetched(file: dict) -> bool:
    path = file.get("path")
    return isinstance(path, str) and path.strip().lower().startswith(("http://", "https://", "//"))


def _guarded(path: str) -> bool:
    segments = [s for s in path.split("/") if s]
    return bool(segments) and segments[-1] in _GUARDED


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)  # compared by identity: two requests of the same size are two entries
class _Entry:
    """The bytes one upload request brought (updated while it streams)."""

    at: float
    bytes: int = 0


@dataclass
class UploadGate:
    """Who may upload, and how much: the bookkeeping behind UploadGuard (one per server)."""

    users: UserStore
    limits: UploadLimits = field(default_factory=UploadLimits)
    _ledger: dict[str, list[_Entry]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _usage: tuple[float, int, int] = (0.0, 0, 0)  # (measured at, bytes, files) of the cache folder
    _open: list[_Entry] = field(default_factory=list)  # the requests streaming now
    stop: threading.Event = field(default_factory=threading.Event)  # stops the cleaner thread

    async def user_of(self, scope) -> str | None:
        """The logged-in user of a request, resolved as Gradio's own /gradio_api/user route does."""
        server = scope.get("app")
        if server is None:
            return None
        request = Request(scope)
        dependency = getattr(server, "auth_dependency", None)
        if dependency is not None:
            user = dependency(request)
            return await user if inspect.isawaitable(user) else user
        token = session_token(request, server)
        return getattr(server, "tokens", {}).get(token) if token else None

    def check_user(self, name: str | None) -> None:
        if not name:
            raise _Refused(401, "Not authenticated.")
        try:
            user = self.users.get(name)
        except UserError:
            raise _Refused(403, "Your account no longer exists.") from None
        if not user.is_admin:
            raise _Refused(403, "Only administrators can upload files.")

    def _used(self, name: str, now: float) -> int:
        entries = self._ledger[name]
        entries[:] = [e for e in entries if now - e.at < self.limits.window_s]
        return sum(e.bytes for e in entries)

    def in_flight(self, but: _Entry) -> int:
        """Bytes of the uploads streaming now, other than `but` (their files are not all on disk yet)."""
        return sum(e.bytes for e in self._open if e is not but)

    async def usage(self, folder: str) -> tuple[int, int]:
        measured, used, files = self._usage
        if time.monotonic() - measured > 2.0:
            used, files = await anyio.to_thread.run_sync(cache_usage, folder)
            self._usage = (time.monotonic(), used, files)
        return used, files

    def forget_usage(self) -> None:
        self._usage = (0.0, 0, 0)

    def open(self, name: str, declared: int | None, cache_bytes: int, cache_files: int) -> "_Budget":
        """Check the limits for a request of `declared` bytes (None: unknown) and book it."""
        limits = self.limits
        with self._lock:
            now = time.time()
            used = self._used(name, now)
            if cache_files >= limits.total_files:
                raise _Refused(507, f"The upload folder holds {cache_files} files, the limit; try again later.")
            budget = _Budget(self, name, _Entry(now), cache_bytes)
            if declared is not None:
                budget.check(declared, used_before=used)
            self._ledger[name].append(budget.entry)
            self._open.append(budget.entry)
            return budget

    def close(self, budget: "_Budget") -> None:
        with self._lock:
            if budget.entry in self._open:
                self._open.remove(budget.entry)
        self.forget_usage()


@dataclass
class _Budget:
    gate: UploadGate
    name: str
    entry: _Entry
    cache_bytes: int

    def check(self, size: int, used_before: int | None = None) -> None:
        limits = self.gate.limits
        if size > limits.request_bytes:
            raise _Refused(413, f"Upload too large: over {limits.request_bytes / MB:.0f} MB in one request.")
        if used_before is None:
            used_before = sum(e.bytes for e in self.gate._ledger[self.name] if e is not self.entry)
        if used_before + size > limits.user_bytes:
            raise _Refused(429, f"Upload limit reached: {limits.user_bytes / MB:.0f} MB per user per "
                                f"{limits.window_s / 60:.0f} minutes.")
        if self.cache_bytes + self.gate.in_flight(self.entry) + size > limits.total_bytes:
            raise _Refused(507, f"The upload folder is full ({limits.total_bytes / MB:.0f} MB); try again later.")

    def add(self, n: int) -> None:
        with self.gate._lock:
            self.entry.bytes += n
            self.check(self.entry.bytes)


async def _answer(send, status: int, message: str) -> None:
    body = message.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    """ASGI middleware: POSTs to Gradio's file-writing routes from admins only, within the gate's limits."""

    def __init__(self, app, gate: UploadGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"").lower().lstrip()
        if not _guarded(scope.get("path", "")) and not content_type.startswith(b"multipart/"):
            if content_type.startswith(b"application/x-www-form-urlencoded"):
                await self.app(scope, receive, send)  # a plain form (sign-in): names no file
                return
            await self._files_in_body(scope, receive, send)
            return
        gate = self.gate
        name = None
        try:
            name = await gate.user_of(scope)
            gate.check_user(name)
            declared = None
            for key, value in scope.get("headers", []):
                if key == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        raise _Refused(400, "Invalid Content-Length.") from None
            folder = getattr(scope.get("app"), "uploaded_file_dir", None)
            cache_bytes, cache_files = await gate.usage(folder) if folder else (0, 0)
            budget = gate.open(name, declared, cache_bytes, cache_files)
        except _Refused as refused:
            log.warning("refused upload (%s) for %s: %s", refused.status, name or "-", refused.message)
            await _answer(send, refused.status, refused.message)
            return

        state = {"cut": False, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request" and not state["cut"]:
                try:
                    budget.add(len(message.get("body", b"")))
                except _Refused as refused:
                    state["cut"] = True
                    log.warning("cut upload (%s) for %s: %s", refused.status, name, refused.message)
                    if not state["started"]:
                        state["started"] = True
                        await _answer(send, refused.status, refused.message)
                    return {"type": "http.disconnect"}
            elif state["cut"]:
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["cut"]:
                return  # the refusal has been sent; the route's own answer to a cut body is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["cut"]:
                raise
            # the route failed because its body was cut: already answered and logged in one line
        finally:
            gate.close(budget)


    async def _files_in_body(self, scope, receive, send) -> None:
        """Read the body (up to json_bytes), refuse a file named in it (see the module docstring), replay it."""
        limit = self.gate.limits.json_bytes
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                log.warning("refused a %d+ byte request body to %s", size, scope.get("path"))
                await _answer(send, 413, "Request body too large.")
                return
            if not message.get("more_body", False):
                break
        name = None
        try:
            body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
            try:
                decoded = json.loads(body) if body.strip() else None
            except (ValueError, RecursionError):
                decoded = None  # not JSON: nothing Gradio would fetch; the route answers it
            files = list(_files_named(decoded))
            if files:
                name = await self.gate.user_of(scope)
                if any(_fetched(f) for f in files):
                    raise _Refused(400, "Files are uploaded, not fetched from a URL.")
                self.gate.check_user(name)  # only admins have a file input
        except _Refused as refused:
            log.warning("refused a file in a request to %s (%s) for %s: %s", scope.get("path"), refused.status,
                        name or "-", refused.message)
            await _answer(send, refused.status, refused.message)
            return

        pending = list(messages)

        async def replay():
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def middleware(gate: UploadGate) -> Middleware:
    """For launch's app_kwargs, so the upload routes are guarded from the server's first request on."""
    return Middleware(UploadGuard, gate=gate)


def install(blocks, services, limits: UploadLimits | None = None, gate: UploadGate | None = None) -> UploadGate:
    """Guard a launched app's upload routes and start cleaning its upload cache (see the module docstring); and,
    as launch_app's one hook for this hardening, log refused actions in one line (app/ui/refused.py).

    Call it right after blocks.launch(), with the `gate` whose `middleware` was given to launch (otherwise the
    middleware is added now, after the server started); calling it again for the same server does nothing."""
    refused.install(blocks)
    server = blocks.server_app
    existing = getattr(server, "_groundwork_upload_gate", None)
    if existing is not None:
        return existing
    if gate is None:
        gate = UploadGate(services.users, limits or UploadLimits())
        # innermost of the app's own middleware: the login guard's security headers wrap its refusals too
        server.user_middleware.append(middleware(gate))
        server.middleware_stack = server.build_middleware_stack()  # the server has started: build it again
    server._groundwork_upload_gate = gate
    folder = Path(server.uploaded_file_dir)
    stop = gate.stop

    def keep() -> set[str]:
        kept: set[str] = set()
        for block in list(getattr(blocks, "blocks", {}).values()):
            kept.update(getattr(block, "keep_in_cache", ()) or ())
        return kept

    def clean_once(max_age_s: float) -> None:
        try:
            result = clean_upload_cache(folder, max_age_s, gate.limits.partial_age_s, keep=keep())
        except Exception:  # never take the server down; the next round tries again
            log.exception("cleaning the upload cache %s failed", folder)
            return
        if result.files:
            log.info("upload cache: deleted %d files (%.1f MB) older than %.0f s", result.files,
                     result.bytes / MB, max_age_s)
            for tracked in getattr(blocks, "temp_file_sets", []):  # Gradio's in-memory record of them
                tracked.difference_update({p for p in list(tracked) if not os.path.lexists(p)})
        gate.forget_usage()

    def loop() -> None:
        while not stop.wait(gate.limits.clean_every_s):
            if not getattr(blocks, "is_running", False):
                return
            clean_once(gate.limits.cache_age_s)

    clean_once(gate.limits.cache_age_s)  # what an earlier run (or a crash) left behind
    threading.Thread(target=loop, daemon=True, name="upload-cache-cleaner").start()
    return gate
