"""The QA set: one JSON object per line with `id`, `question` and optional gold fields.

    {"id": "acme-001", "question": "...", "answer": "...", "gold_passage": "...",
     "gold_source": "finance/expense-policy.pdf", "answerable": true, "user": "alice"}

A follow-up set (examples/acme/followups.jsonl) also gives each question the conversation before it:
`"history": [{"question": "...", "answer": "..."}]`, oldest first; the question is then asked in that conversation.

`gold_source` is a path relative to the ingested folder, optionally with `#anchor`. `answerable` defaults to
true; an unanswerable question has no gold answer, passage or source. `user` asks the question as that user
(their groups), to test permissions; without it the question is asked as the anonymous user (`everyone`).
"""
from __future__ import annotations

from pathlib import Path

from eval.errors import EvalError
from finetune.data import DataError, QAItem
from finetune.data import load_qa as _load_qa

SPLITS = ("train", "validation", "test", "all")


def load_qa(path: Path) -> list[QAItem]:
    """Read and validate a QA file (finetune.data.load_qa); the first problem raises EvalError naming file:line."""
    try:
        return _load_qa(path, history=True)
    except DataError as exc:
        raise EvalError(str(exc)) from None


def select_split(items: list[QAItem], split: str) -> list[QAItem]:
    """The questions of one split (`finetune.splits.split_of` on the id), or all of them."""
    if split not in SPLITS:
        raise EvalError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if split == "all":
        return list(items)
    from finetune.splits import split_of

    return [item for item in items if split_of(item.id) == split]


def resolve_users(items: list[QAItem], users_file: Path | None):
    """Map every user a QA set names to app.users.User; names missing from the users file fail up front."""
    from app.users import ANONYMOUS, UserError, UserStore

    names = sorted({item.user for item in items if item.user})
    users = {None: ANONYMOUS}
    if not names:
        return users
    if users_file is None or not Path(users_file).exists():
        raise EvalError(f"the QA set asks as {', '.join(names)} but there is no users file at {users_file} "
                        f"(pass --users FILE or add them with `groundwork users add`)")
    store = UserStore(Path(users_file))
    try:
        known = {user.name: user for user in store.list()}
    except UserError as exc:
        raise EvalError(str(exc)) from None
    missing = [name for name in names if name not in known]
    if missing:
        raise EvalError(f"the QA set names user(s) not in {users_file}: {', '.join(missing)}")
    users.update({name: known[name] for name in names})
    return users
