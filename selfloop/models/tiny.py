"""A tiny randomly initialised Llama-style model with a real BPE tokenizer and chat template.

About 250k parameters: tests and configs/tiny.yaml run the real generation and training code on it
in seconds. The tokenizer is a byte-level BPE trained here on selfloop's own prompt files, so any
text encodes; the chat template is ChatML, like SmolLM2's. Building is deterministic; the result is
cached under the cache directory, keyed by a hash of everything that shapes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from importlib.resources import files
from pathlib import Path

from selfloop.manifest import atomic_directory, manifest_sha256, verify
from selfloop.private import private_dir

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SHAPE = {
    "vocab_size": 512,
    "hidden_size": 96,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "max_position_embeddings": 2048,
    "seed": 0,
}


def _corpus() -> list[str]:
    texts = []
    root = files("selfloop.prompts")
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.endswith((".txt", ".jsonl")):
            texts.extend(entry.read_text().splitlines())
    texts += [f"What is {a} + {b}? {a} + {b} = {a + b}. The answer is {a + b}." for a in range(31) for b in range(0, 31, 3)]
    return texts


def tiny_model_dir(cache_dir: Path) -> tuple[Path, str]:
    """Build (once) and return (directory, manifest sha256) of the tiny model."""
    corpus = _corpus()
    key = hashlib.sha256(json.dumps([SHAPE, CHAT_TEMPLATE, corpus]).encode()).hexdigest()[:12]
    target = cache_dir / "models" / f"tiny-{key}"
    if target.exists():
        verify(target)
        return target, manifest_sha256(target)
    private_dir(target.parent)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first build (as packaged models do)
        if not target.exists():
            with atomic_directory(target, extra={"source": "selfloop.models.tiny", "shape": SHAPE}) as tmp:
                build_tiny_model(tmp, corpus)
    verify(target)
    return target, manifest_sha256(target)


def build_tiny_model(out: Path, corpus: list[str]) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SHAPE["vocab_size"],
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",  # noqa: S106 - a token name, not a password
        pad_token="<|endoftext|>",  # noqa: S106 - a token name, not a password
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=SHAPE["hidden_size"],
        intermediate_size=SHAPE["intermediate_size"],
        num_hidden_layers=SHAPE["num_hidden_layers"],
        num_attention_heads=SHAPE["num_attention_heads"],
        num_key_value_heads=SHAPE["num_key_value_heads"],
        head_dim=SHAPE["head_dim"],
        max_position_embeddings=SHAPE["max_position_embeddings"],
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SHAPE["seed"])
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
