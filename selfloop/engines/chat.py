"""Chat formatting shared by engines and training: the same prompt token ids everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfloop.engines.base import Chat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def prompt_ids(tokenizer: PreTrainedTokenizerBase, chat: Chat) -> list[int]:
    """Token ids of a chat rendered by the model's chat template, ready for the assistant's turn."""
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def completion_ids(tokenizer: PreTrainedTokenizerBase, text: str, end_id: int | None) -> list[int]:
    """Token ids of a completion given as text (e.g. a ground-truth response), ending with the end-of-turn token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids + [end_id] if end_id is not None else ids


def user_chat(prompt: str, system: str | None = None) -> Chat:
    chat: Chat = [{"role": "system", "content": system}] if system else []
    return chat + [{"role": "user", "content": prompt}]


def prompt_chat(text: str, system: str | None = None, messages: list[dict[str, str]] | tuple | None = None) -> Chat:
    """What the policy is asked for a prompt: its stored conversation (`prompts.messages`: a task given as a chat,
    with its own system turn and earlier turns), the config's system turn put first when the conversation has
    none; or the plain user turn `text` after the system turn."""
    if not messages:
        return user_chat(text, system)
    turns: Chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system})
    return turns
