"""The grounded prompt. It lives in finetune/prompt.py because adapters are trained on exactly this format."""
from finetune.prompt import NOT_FOUND, SYSTEM_PROMPT, PromptPassage, build_messages, fit_passages, passage_label

__all__ = ["NOT_FOUND", "SYSTEM_PROMPT", "PromptPassage", "build_messages", "fit_passages", "passage_label"]
