"""The QA set: one JSON object per line with `id`, `question` and optional gold fields.

    {"id": "acme-001", "question": "...", "answer": "...", "gold_passage": "...",
     "gold_source": "finance/expense-policy.pdf", "answerable": true, "user": "alice"}

`gold_source` is a path relative to the ingested folder, optionally with `#anchor`. `answerable` defaults to
true; an unanswerable question has no gold answer, passage or source. `user` asks the question as that user
(their groups), to test permissions; without it the question is asked as the anonymous user (`everyone`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eval.errors import EvalError

SPLITS = ("train", "validation", "test", "all")
FIELDS = ("id", "question", "answer", "gold_passage", "gold_source", "answerable", "user")


@dataclass(frozen=True)
class QAItem:
    """One question of a QA set with its gold data."""

    id: str
    question: str
    answer: str | None = None  # the gold answer
    gold_passage: str | None = None  # text of the passage that holds the answer
    gold_source: str | None = None  # file path relative to the ingested folder, optionally "#anchor"
    answerable: bool = True  # false: the documents (readable by this user) do not hold the answer
    user: str | None = None  # ask as this user (from the users file); None = anonymous
    line: int = 0  # line number in the QA file, for messages

    @property
    def gold_file(self) -> str | None:
        """gold_source without its #anchor."""
        return self.gold_source.partition("#")[0] if self.gold_source else None

    @property
    def gold_anchor(self) -> str | None:
        return self.gold_source.partition("#")[2] or None if self.gold_source else None

    def gold_dict(self) -> dict:
        return {"gold_answer": self.answer, "gold_passage": self.gold_passage, "gold_source": self.gold_source,
                "answerable": self.answerable}


def _optional_text(path: Path, number: int, row: dict, key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EvalError(f"{path}:{number}: '{key}' must be a string")
    if not value.strip():  # "" means absent
        return None
    return value.strip()


def load_qa(path: Path) -> list[QAItem]:
    """Read and validate a QA file; the first problem raises EvalError naming file:line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalError(f"{path}: QA file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: cannot read the QA file ({exc})") from None
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise EvalError(f"{path}:{number}: each line must be a JSON object")
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            raise EvalError(f"{path}:{number}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
        qid, question = row.get("id"), row.get("question")
        if isinstance(qid, int) and not isinstance(qid, bool):
            qid = str(qid)
        if not isinstance(qid, str) or not qid.strip():
            raise EvalError(f"{path}:{number}: missing 'id' (a non-empty string)")
        if qid in seen:
            raise EvalError(f"{path}:{number}: duplicate id '{qid}' (first on line {seen[qid]})")
        if not isinstance(question, str) or not question.strip():
            raise EvalError(f"{path}:{number}: missing 'question' (a non-empty string)")
        answerable = row.get("answerable", True)
        if not isinstance(answerable, bool):
            raise EvalError(f"{path}:{number}: 'answerable' must be true or false")
        answer = _optional_text(path, number, row, "answer")
        gold_passage = _optional_text(path, number, row, "gold_passage")
        gold_source = _optional_text(path, number, row, "gold_source")
        user = _optional_text(path, number, row, "user")
        if not answerable and (gold_passage or gold_source):
            raise EvalError(f"{path}:{number}: an unanswerable question cannot have a gold_passage or gold_source")
        seen[qid] = number
        items.append(QAItem(id=qid.strip(), question=question.strip(), answer=answer, gold_passage=gold_passage,
                            gold_source=gold_source, answerable=answerable, user=user, line=number))
    if not items:
        raise EvalError(f"{path}: the QA file holds no questions")
    return items


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
