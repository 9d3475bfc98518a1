"""Training prompts: load, validate and encode them before any training starts.

A prompt row has a `prompt` (plain text, or chat messages as a list of `{"role",
"content"}` dicts, as in TRL's conversational datasets) and a `language` (any code that
`tlpo.languages.normalize_language` accepts). Plain-text prompts become a single user
message, and every prompt is encoded with the tokenizer's chat template, so the model is
trained on exactly the context it sees at inference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tlpo.languages import normalize_language


class PromptDataError(ValueError):
    """A training prompt or its tokenizer cannot be used; the message names the row and the fix."""


@dataclass
class PromptRow:
    """A validated training prompt: chat messages and a normalised language code."""

    messages: list[dict]
    language: str


def _describe(where: str, index: int) -> str:
    return f"{where} row {index + 1}"


def to_messages(prompt, where: str = "prompt") -> list[dict]:
    """Return `prompt` as chat messages; a string becomes one user message.

    Raises `PromptDataError` for an empty prompt or malformed messages.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptDataError(f"{where}: the prompt is empty; remove the row or give it text")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and prompt and all(isinstance(message, dict) for message in prompt):
        for message in prompt:
            if "role" not in message or "content" not in message:
                raise PromptDataError(
                    f"{where}: a chat message lacks 'role' or 'content' ({message!r}); "
                    "write messages as {\"role\": ..., \"content\": ...}"
                )
        if not any(str(message["content"]).strip() for message in prompt):
            raise PromptDataError(f"{where}: every message of the prompt is empty; remove the row or give it text")
        return [dict(message) for message in prompt]
    raise PromptDataError(
        f"{where}: 'prompt' must be a non-empty string or a list of chat messages, got {type(prompt).__name__} {prompt!r:.80}"
    )


def validate_rows(rows: Iterable[dict], where: str = "dataset") -> list[PromptRow]:
    """Check every row for a usable `prompt` and a known `language` and return them normalised.

    Raises `PromptDataError` naming the first bad row (1-based) and the fix.
    """
    validated = []
    for index, row in enumerate(rows):
        label = _describe(where, index)
        if not isinstance(row, dict):
            raise PromptDataError(f"{label}: expected an object with 'prompt' and 'language', got {row!r:.80}")
        if "prompt" not in row:
            raise PromptDataError(f"{label}: missing 'prompt'; every row needs the prompt text or chat messages")
        if "language" not in row or row["language"] in (None, ""):
            raise PromptDataError(
                f"{label}: missing 'language'; add the target language of the answer, for example \"ko\""
            )
        try:
            language = normalize_language(str(row["language"]))
        except ValueError as error:
            raise PromptDataError(f"{label}: {error}") from None
        validated.append(PromptRow(messages=to_messages(row["prompt"], label), language=language))
    if not validated:
        raise PromptDataError(f"{where}: no prompts; give at least one row with 'prompt' and 'language'")
    return validated


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file into one dict per non-blank line, without validating the rows."""
    path = Path(path)
    if not path.is_file():
        raise PromptDataError(f"prompts file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise PromptDataError(f"{path} line {line_number}: invalid JSON ({error.msg})") from None
    return rows


def read_prompts_jsonl(path: str | Path) -> list[PromptRow]:
    """Read and validate a JSONL file of prompt rows (see the module docstring)."""
    rows = read_jsonl(path)
    return validate_rows(rows, where=str(path))


def check_chat_template(tokenizer) -> None:
    """Raise `PromptDataError` unless the tokenizer has a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise PromptDataError(
            f"tokenizer {name!r} has no chat template; TLPO samples responses the way the model is "
            "prompted at inference, so use an instruction-tuned model or set tokenizer.chat_template"
        )


def context_length(model) -> int | None:
    """Return the number of positions the model accepts, or None when its config does not set it."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)
    if text_config is not None:
        value = getattr(text_config, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode_prompts(
    tokenizer,
    rows: Sequence[PromptRow],
    *,
    max_new_tokens: int,
    max_length: int | None,
    where: str = "dataset",
) -> list[list[int]]:
    """Apply the chat template with the generation prompt and return each prompt's token ids.

    Raises `PromptDataError` when the tokenizer has no chat template, or when a prompt
    plus `max_new_tokens` does not fit in `max_length` positions (None skips that check).
    """
    check_chat_template(tokenizer)
    encoded = []
    for index, row in enumerate(rows):
        ids = tokenizer.apply_chat_template(row.messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = [int(token) for token in ids]
        if max_length is not None and len(ids) + max_new_tokens > max_length:
            raise PromptDataError(
                f"{_describe(where, index)}: the prompt is {len(ids)} tokens with the chat template, and with "
                f"room for {max_new_tokens} new tokens it exceeds the model's context of {max_length} tokens; "
                "shorten or drop the prompt, or lower max_new_tokens"
            )
        encoded.append(ids)
    return encoded
