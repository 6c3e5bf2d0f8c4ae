"""The Gradio web UI: employees chat, admins manage documents, users, adapters and guardrails.

    services = make_services(engine, users_file, guardrails_file, adapters_dir, docs_dir, acl_path)
    url = launch_app(build_app(services), services, port=7860, block=False)

`groundwork serve` calls serve(ServeOptions(...)). Nothing leaves the machine: analytics are off, the fonts
and scripts are served by the app itself, and models load only from local files.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from app.ui.app import LockedEmbedder, ServeOptions, build_app, launch_app, make_services, serve  # noqa: E402

__all__ = ["LockedEmbedder", "ServeOptions", "build_app", "launch_app", "make_services", "serve"]
