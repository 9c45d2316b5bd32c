"""A row's text -> the chat the model is trained on, with one image part per image of the row.

Three shapes, the first present winning:

- a chat (``messages``): turns as ``{"role", "content"}`` (OpenAI/HF style; content a string or a
  list of ``{"type": "text"|"image"}`` parts) or ``{"from", "value"}`` (ShareGPT/LLaVA, with
  ``human``/``gpt``); ``<image>`` in a text marks where an image goes (LLaMA-Factory, LLaVA);
- ``question`` + ``answer``: one user turn (images, question) and the answer;
- ``caption``: one user turn (images, ``instruction``) and the caption as the answer.

Where a chat names no image, the row's images go first in its first user turn. The loss later
covers only the assistant turns, so a chat must end with a non-empty assistant answer.
"""

from __future__ import annotations

from typing import Any

from train_pipeline.training.formats.common import BadRow

ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
PLACEHOLDER = "<image>"


def chat_from_row(row: dict[str, Any], fields: dict[str, str | None], n_images: int, instruction: str,
                  image_name: str | None) -> list[dict[str, Any]]:
    """The chat of ``row`` given the resolved ``fields`` (key -> column, None where absent)."""
    messages, question, answer, caption = (fields.get(k) for k in ("messages", "question", "answer", "caption"))
    if messages is not None:
        return normalise_chat(row[messages], messages, n_images, image_name)
    if question is not None or answer is not None:
        if question is None or answer is None:
            given, missing = ("question", "answer") if question is not None else ("answer", "question")
            raise BadRow(f"{fields[given]!r} without {missing!r}", image_name)
        q, a = _text(row[question], question, image_name), _text(row[answer], answer, image_name)
        return _single_turn(q, a, n_images)
    if caption is not None:
        return _single_turn(instruction, _text(row[caption], caption, image_name), n_images)
    raise BadRow("no caption, question+answer or messages column in this row", image_name)


def _text(value: Any, field: str, image_name: str | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRow(f"no {field!r} text", image_name)
    return value.strip()


def _single_turn(prompt: str, answer: str, n_images: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [*({"type": "image"} for _ in range(n_images)), {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def normalise_chat(raw: Any, field: str, n_images: int, image_name: str | None) -> list[dict[str, Any]]:
    """Validate a chat and give it exactly ``n_images`` image parts (see the module doc)."""
    if not isinstance(raw, list) or not raw:
        raise BadRow(f"{field!r} is not a non-empty list of messages", image_name)
    messages: list[dict[str, Any]] = []
    placed = 0
    for msg in raw:
        role, content = _turn(msg, field, image_name)
        parts = _parts(content, field, image_name)
        placed += sum(1 for p in parts if p["type"] == "image")
        messages.append({"role": role, "content": parts})
    if messages[-1]["role"] != "assistant" or not _text_of(messages[-1]).strip():
        raise BadRow(f"{field!r} does not end with a non-empty assistant answer", image_name)
    if placed == 0 and n_images:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise BadRow(f"{field!r} has no user turn", image_name)
        first_user["content"][:0] = [{"type": "image"} for _ in range(n_images)]
    elif placed != n_images:
        raise BadRow(f"{field!r} places {placed} image(s) but the row has {n_images}", image_name)
    return messages


def _turn(msg: Any, field: str, image_name: str | None) -> tuple[str, Any]:
    if isinstance(msg, dict):
        if "role" in msg:
            role, content = msg.get("role"), msg.get("content")
        else:
            role, content = msg.get("from"), msg.get("value")
        if isinstance(role, str) and role.lower() in ROLES:
            return ROLES[role.lower()], content
    raise BadRow(f"{field!r} has a message without a role in {sorted(set(ROLES))}", image_name)


def _parts(content: Any, field: str, image_name: str | None) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return _split_placeholders(content)
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts: list[dict[str, Any]] = []
        for part in content:
            if part.get("type") == "image" or "image" in part:
                parts.append({"type": "image"})  # the row's image column holds the image itself
            elif isinstance(part.get("text"), str):
                parts.extend(_split_placeholders(part["text"]))
            else:
                raise BadRow(f"{field!r} has a content part that is neither image nor text", image_name)
        return parts
    raise BadRow(f"{field!r} has a message whose content is not text or a list of parts", image_name)


def _split_placeholders(text: str) -> list[dict[str, Any]]:
    """``"<image>\\nWhat is it?"`` -> an image part, then the text (whitespace around images dropped)."""
    pieces = text.split(PLACEHOLDER)
    parts: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        if i:
            parts.append({"type": "image"})
        piece = piece.strip() if len(pieces) > 1 else piece
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def _text_of(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["content"])
