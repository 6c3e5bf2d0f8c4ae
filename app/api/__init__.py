"""The OpenAI-compatible API (/v1) served beside the web UI; see routes.py."""
from __future__ import annotations

from app.api.routes import MAX_BODY, OpenAiApi, mount

__all__ = ["MAX_BODY", "OpenAiApi", "mount"]
