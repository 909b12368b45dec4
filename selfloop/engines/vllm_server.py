"""The vLLM server engine: generation on a fleet of running `vllm serve` servers (OpenAI-compatible API).

Each server serves the loop's base model with LoRA enabled and runtime adapter loading allowed; the
docs/scaling.md gives the command. This process keeps the tokenizer (prompts are sent as
token ids, rendered by the same chat template as the other engines) and sends completions requests:

- Adapters: a checkpoint is loaded on every server under a fresh name (vLLM caches adapters by name and
  id, so a name reused for other weights would serve the old ones), and the least recently used names
  beyond `engine.max_adapters_loaded` are unloaded, so a loop that runs for weeks holds a bounded number.
  The servers read the adapter directory themselves: they must see the state directory at the same path
  (a shared filesystem); a server that cannot load it fails the call with that said.
- Data parallel: requests go round-robin over the healthy servers, at most `engine.max_in_flight` at a
  time per server, each with a timeout; a failed request is retried on another server; when the retries
  are spent the call fails with a one-line error (the rollout's committed chunks stay; a resume
  regenerates only the missing samples).
- Log-probs: each sampled token's log-probability under the distribution it was sampled from, which needs
  the servers started with `--logprobs-mode processed_logprobs` (checked when the engine starts).
- Seeds: one request per completion, each with its seed. A server honours it, but its numerics depend on
  the batch the request lands in, so a re-run through a busy server may differ in a token (see docs/scaling.md).
Scoring (teacher-forced log-probs) runs on transformers in this process, as the in-process vLLM engine's does.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from selfloop.adapters import Adapter, verify_checkpoint
from selfloop.engines.base import Chat, Completion, FollowUp, GenerationStats, ProgressFn, Sampling, generate_then_score
from selfloop.engines.chat import prompt_ids
from selfloop.engines.scorer import ScoredByTransformers, TransformersScorer
from selfloop.errors import SelfloopError

if TYPE_CHECKING:
    import httpx
    from transformers import PreTrainedTokenizerBase

    from selfloop.adapters import Adapter


RETRY_BACKOFF_S = 0.5  # the first wait before a failed request is retried; it doubles with each try, at most 5 s


class ServerError(SelfloopError):
    """A vLLM server refused or failed a request, or none is reachable."""


class _AdapterMissing(Exception):
    """A server does not know the adapter name (it restarted since the adapter was loaded)."""


class _Unavailable(Exception):
    """A server did not answer (connection refused, timeout, 5xx), or answered with something that is not a
    valid reply (`check_choices`): the request may go to another one."""


@dataclass
class _Server:
    url: str  # base URL without /v1
    healthy: bool = True
    failures: int = 0
    reason: str = ""  # why it was last taken out of the rotation


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def adapter_prefix(loop: str) -> str:
    """Names this loop's adapters start with on the servers (status reads them back)."""
    return f"selfloop-{loop}-c"


class VLLMServerEngine(ScoredByTransformers):
    name = "vllm-server"

    def __init__(
        self,
        model_dir: Path,
        urls: Sequence[str],
        *,
        loop: str = "loop",
        served_model: str | None = None,
        api_key: str | None = None,
        max_in_flight: int = 32,
        request_timeout_s: float = 600.0,
        retries: int = 2,
        max_adapters_loaded: int = 2,
        scorer_device: str = "auto",
        check: bool = True,
    ) -> None:
        import httpx

        from selfloop.models.loading import load_tokenizer

        if not urls:
            raise ServerError("engine.servers: no vLLM server URL given")
        self.model_dir = model_dir
        self.tokenizer = load_tokenizer(model_dir)
        self.servers = [_Server(normalize_url(u)) for u in urls]
        self.loop = loop
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.max_adapters_loaded = max(1, max_adapters_loaded)
        self.scorer_device = scorer_device
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(request_timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=max_in_flight * len(self.servers) + 8),
        )
        self._lock = threading.Lock()
        self._round_robin = itertools.count()
        # Adapter (checkpoint id, sha256) -> the name it is loaded under on every server, least recent first.
        self._adapters: OrderedDict[tuple[int, str], str] = OrderedDict()
        self._scorer = TransformersScorer(self.model_dir, self.scorer_device)
        self.vocab_size = vocab_size(model_dir, self.tokenizer)
        self.last_stats = GenerationStats()
        self.served_model = served_model or self._served_model()
        if check:
            self._check_servers()

    # --- HTTP -----------------------------------------------------------------------------------------
    def _post(self, server: _Server, path: str, body: dict) -> dict:
        import httpx

        try:
            response = self._client.post(server.url + path, json=body)
        except httpx.HTTPError as e:  # refused, reset, timed out
            raise _Unavailable(f"{server.url}: {type(e).__name__}: {e}".rstrip(": ")) from e
        if response.status_code >= 500:
            raise _Unavailable(f"{server.url}: HTTP {response.status_code}: {_message(response)}")
        if response.status_code == 404 and path == "/v1/completions" and body.get("model") != self.served_model:
            raise _AdapterMissing(f"{server.url}: {_message(response)}")
        if response.status_code >= 400:
            raise ServerError(f"vLLM server {server.url}{path}: HTTP {response.status_code}: {_message(response)}")
        if "json" not in response.headers.get("content-type", ""):
            return {"text": response.text}  # the adapter endpoints answer in plain text
        try:
            body = response.json()
        except ValueError:
            raise _Unavailable(f"{server.url}{path}: the reply is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Unavailable(f"{server.url}{path}: the reply is not a JSON object")
        return body

    def _get(self, server: _Server, path: str) -> dict:
        import httpx

        try:
            response = self._client.get(server.url + path, timeout=30.0)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as e:
            raise ServerError(f"vLLM server {server.url} is not reachable ({type(e).__name__}: {e}); "
                              "check engine.servers and that `vllm serve` runs there") from e

    def _models(self, server: _Server) -> tuple[list[str], list[str]]:
        try:
            return split_models(self._get(server, "/v1/models")["data"])
        except (KeyError, TypeError, AttributeError):
            raise ServerError(f"vLLM server {server.url}: /v1/models did not answer with a list of models") from None

    def _served_model(self) -> str:
        bases, _ = self._models(self.servers[0])
        if not bases:
            raise ServerError(f"vLLM server {self.servers[0].url} lists no base model")
        return bases[0]

    def _check_servers(self) -> None:
        """Every server: serves `served_model`, tokenizes as our tokenizer does, and reports processed log-probs.
        Then it unloads this loop's adapters that an earlier process of it loaded and could not unload (it
        crashed): the loop has one writer, so any name of this loop's form on a server is such a leftover."""
        probe = "Hello, what is 2 + 2?"
        expected = self.tokenizer.encode(probe, add_special_tokens=False)
        leftover = re.compile(re.escape(adapter_prefix(self.loop)) + r"\d+-[0-9a-f]{8}")
        for server in self.servers:
            bases, adapters = self._models(server)
            if self.served_model not in bases + adapters:
                raise ServerError(f"vLLM server {server.url} does not serve {self.served_model!r} (it serves "
                                  f"{bases + adapters}); every server must serve the same base model")
            got = self._post(server, "/tokenize", {"model": self.served_model, "prompt": probe, "add_special_tokens": False})
            if got.get("tokens") != expected:
                raise ServerError(f"vLLM server {server.url} tokenizes differently from {self.model_dir}: "
                                  "it serves another model than model.base")
            # With top_k=1 the sampled distribution has one token: processed log-probs report 0 for it,
            # raw ones the model's log-probability, below 0.
            out = self._post(server, "/v1/completions", {
                "model": self.served_model, "prompt": expected, "max_tokens": 1, "temperature": 1.0, "top_k": 1,
                "logprobs": 0, "seed": 0, "return_token_ids": True})
            problem = check_choices(out, 1, 1, self.vocab_size)
            if problem:
                raise ServerError(f"vLLM server {server.url}: a bad reply to a one-token probe ({problem})")
            logprob = out["choices"][0]["logprobs"]["token_logprobs"][0]
            if abs(logprob) > 1e-4:
                raise ServerError(f"vLLM server {server.url} reports raw log-probs; start it with "
                                  "--logprobs-mode processed_logprobs (samples must carry the log-probs they were sampled with)")
            for name in filter(leftover.fullmatch, adapters):
                try:
                    self._post(server, "/v1/unload_lora_adapter", {"lora_name": name})
                    logger.info("unloaded {} (left by an earlier run) from {}", name, server.url)
                except (ServerError, _Unavailable) as e:
                    logger.warning("could not unload {} from {}: {}", name, server.url, e)

    # --- adapters -------------------------------------------------------------------------------------

    def _adapter_name(self, adapter: Adapter | None) -> str:
        if adapter is None:
            return self.served_model
        key = (adapter.checkpoint_id, adapter.sha256)
        with self._lock:
            if key in self._adapters:
                self._adapters.move_to_end(key)
                return self._adapters[key]
        verify_checkpoint(adapter.path, adapter.sha256)  # a broken checkpoint is refused, never served
        name = f"{adapter_prefix(self.loop)}{adapter.checkpoint_id}-{secrets.token_hex(4)}"  # fresh: never a cached name
        path = str(Path(adapter.path).resolve())
        for server in self.servers:
            try:
                self._post(server, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
            except (ServerError, _Unavailable) as e:
                raise ServerError(f"vLLM server {server.url} could not load adapter {path}: {e}. The servers read "
                                  "checkpoints from the state directory at the same path (a shared filesystem) and "
                                  "need --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True") from None
        with self._lock:
            self._adapters[key] = name
            stale = list(self._adapters.items())[: max(0, len(self._adapters) - self.max_adapters_loaded)]
            for old_key, _ in stale:
                del self._adapters[old_key]
        for _, old in stale:
            self._unload(old)
        logger.info("adapter of checkpoint {} loaded on {} server(s) as {}", adapter.checkpoint_id, len(self.servers), name)
        return name

    def _unload(self, name: str) -> None:
        for server in self.servers:
            try:
                self._post(server, "/v1/unload_lora_adapter", {"lora_name": name})
            except (ServerError, _Unavailable) as e:  # a restarted server no longer has it: nothing to free
                logger.warning("could not unload adapter {} from {}: {}", name, server.url, e)

    def loaded_adapters(self) -> list[str]:
        with self._lock:
            return list(self._adapters.values())

    # --- generation -----------------------------------------------------------------------------------
    def _pick(self, avoid: _Server | None) -> _Server:
        with self._lock:
            healthy = [s for s in self.servers if s.healthy and s is not avoid] or [s for s in self.servers if s.healthy]
            if not healthy:  # each with the reason it left the rotation: a bad reply is not "unreachable"
                raise ServerError("no vLLM server is usable: " + ", ".join(
                    f"{s.url} ({s.reason})" if s.reason else s.url for s in self.servers))
            return healthy[next(self._round_robin) % len(healthy)]

    def _complete(self, body: dict) -> list[dict]:
        """One completions request, retried on another server when one fails or its reply does not check; its choices."""
        server, last = None, ""
        for attempt in range(self.retries + 1):
            try:
                server = self._pick(server)
            except ServerError:
                if not last:
                    raise
                raise ServerError(f"vLLM server request failed on every server ({attempt} tries): {last}") from None
            try:
                reply = self._post(server, "/v1/completions", body)
                problem = check_choices(reply, body["n"], body["max_tokens"], self.vocab_size)
                if problem:
                    raise _Unavailable(f"{server.url}: a bad reply ({problem})")
                return reply["choices"]
            except _Unavailable as e:
                last = str(e)
                with self._lock:
                    server.failures += 1
                    server.healthy = False  # out of the rotation for the rest of this call
                    server.reason = last.removeprefix(f"{server.url}: ")
                logger.warning("vLLM server request failed (try {} of {}): {}", attempt + 1, self.retries + 1, last)
                time.sleep(min(5.0, RETRY_BACKOFF_S * 2**attempt))
        raise ServerError(f"vLLM server request failed after {self.retries + 1} tries: {last}")

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
        try:
            return self._generate(chats, sampling, seeds, adapter, progress)
        except _AdapterMissing as e:  # a server restarted and forgot it: load it again under a new name, once
            logger.warning("a vLLM server lost the adapter ({}); loading it again", e)
            with self._lock:
                self._adapters.clear()
            return self._generate(chats, sampling, seeds, adapter, progress)

    def _generate(self, chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[Sequence[int]] | None, adapter: Adapter | None,
                  progress: ProgressFn | None) -> list[list[Completion]]:
        started = time.monotonic()
        model = self._adapter_name(adapter)
        for server in self.servers:  # every call starts with every server in the rotation again
            server.healthy, server.reason = True, ""
        prompts = [prompt_ids(self.tokenizer, chat) for chat in chats]
        base = {"model": model, "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "top_k": sampling.top_k if sampling.top_k > 0 else -1, "logprobs": 0,
                "return_token_ids": True, "stop": list(sampling.stop) or None, "skip_special_tokens": True}
        if seeds is not None:  # one request per completion, each with its own seed
            requests = [(i, j, {**base, "prompt": prompts[i], "n": 1, "seed": int(seeds[i][j])})
                        for i in range(len(chats)) for j in range(sampling.n)]
        else:
            requests = [(i, 0, {**base, "prompt": prompts[i], "n": sampling.n}) for i in range(len(chats))]
        results: list[list[Completion | None]] = [[None] * sampling.n for _ in chats]
        tokens = 0
        workers = min(len(requests), self.max_in_flight * len(self.servers)) or 1
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vllm-server")
        try:
            futures = {pool.submit(self._complete, body): (i, j) for i, j, body in requests}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    choices = future.result()  # raises the request's ServerError: the whole call fails
                    i, j = futures[future]
                    finished = 0
                    for k, choice in enumerate(choices):
                        completion = _completion(choice, seeds[i][j] if seeds is not None else None)
                        results[i][j + k] = completion
                        tokens += completion.num_tokens
                        finished += completion.num_tokens
                    if progress is not None:
                        progress(len(choices), finished)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.last_stats = GenerationStats(len(requests) * (1 if seeds is not None else sampling.n), tokens,
                                          time.monotonic() - started)
        return results  # type: ignore[return-value]  # every slot is filled by now

    def sleep(self) -> None:
        """The servers keep their memory (they are not on this process's devices); the local scorer moves off."""
        self._scorer.sleep()

    def wake(self) -> None:
        self._scorer.wake()

    def close(self) -> None:
        for name in self.loaded_adapters():
            self._unload(name)
        self._adapters.clear()
        self._scorer.close()
        self._client.close()


def vocab_size(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> int:
    """The number of token ids the model embeds (config.json's vocab_size; the tokenizer's length without one)."""
    import json

    try:
        size = json.loads((Path(model_dir) / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError):
        size = None
    return int(size) if isinstance(size, int) and size > 0 else len(tokenizer)


LOGPROB_SLACK = 1e-4  # a processed log-prob is <= 0; a server's rounding may leave it a hair above
# A sampled token's log-prob below this is no sample (its probability is 0 in any float): -1e308 passed, and
# sums of such values were stored as -Infinity.
LOGPROB_FLOOR = -1e4
# A token's text is at most this long (the longest pieces of common vocabularies are well under 100 characters):
# a reply of 16 token ids and 1 MB of text was stored whole.
MAX_CHARS_PER_TOKEN = 256


def check_choices(reply: dict, n: int, max_tokens: int, vocab: int) -> str | None:
    """What is wrong with a completions reply, or None: nothing from a server is stored before this passes
    (a stored sample is never regenerated, so a bad one would fail training on every resume)."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or len(choices) != n:
        return f"expected {n} choice(s), got {len(choices) if isinstance(choices, list) else type(choices).__name__}"
    for k, choice in enumerate(choices):
        if not isinstance(choice, dict):
            return f"choice {k} is not an object"
        ids, logprobs = choice.get("token_ids"), (choice.get("logprobs") or {})
        logprobs = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        if not isinstance(ids, list) or not isinstance(logprobs, list):
            return (f"choice {k} has no token_ids and token_logprobs lists (the servers need vLLM >= 0.10.2 for "
                    "return_token_ids)")
        if len(ids) != len(logprobs):
            return f"choice {k} has {len(ids)} token ids but {len(logprobs)} log-probs"
        if len(ids) > max_tokens:
            return f"choice {k} has {len(ids)} tokens, above max_tokens {max_tokens}"
        bad = next((t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab), None)
        if bad is not None:
            return f"choice {k} has token id {bad!r}, outside the vocabulary of {vocab}"
        wrong = next((x for x in logprobs if isinstance(x, bool) or not isinstance(x, (int, float))
                      or not math.isfinite(x) or not LOGPROB_FLOOR <= x <= LOGPROB_SLACK), None)
        if wrong is not None or any(x is None for x in logprobs):
            return f"choice {k} has log-prob {wrong!r} (each must be a finite number from {LOGPROB_FLOOR:g} to 0)"
        text = choice.get("text", "")
        if not isinstance(text, str):
            return f"choice {k}'s text is not a string"
        if len(text) > MAX_CHARS_PER_TOKEN * max(len(ids), 1):
            return (f"choice {k} has {len(text)} characters of text for {len(ids)} tokens (at most "
                    f"{MAX_CHARS_PER_TOKEN} a token)")
    return None


def _completion(choice: dict, seed: int | None) -> Completion:
    """A checked choice (`check_choices`) as a Completion."""
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    logprobs = [min(float(x), 0.0) for x in choice["logprobs"]["token_logprobs"]]
    return Completion(choice.get("text") or "", list(choice["token_ids"]), logprobs, finish, seed)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        text = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        text = response.text
    return " ".join(str(text or response.reason_phrase).split())[:500]


def split_models(models: list[dict]) -> tuple[list[str], list[str]]:
    """A server's /v1/models entries as (base model names, LoRA adapter names): adapters name a parent."""
    return [m["id"] for m in models if not m.get("parent")], [m["id"] for m in models if m.get("parent")]


def server_holdings(urls: Sequence[str], api_key: str | None = None, timeout: float = 3.0) -> list[tuple[str, str]]:
    """(url, what it holds) per server, for `selfloop status`: its base model and the LoRA adapters loaded."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rows = []
    for url in urls:
        url = normalize_url(url)
        try:
            models = httpx.get(url + "/v1/models", headers=headers, timeout=timeout).raise_for_status().json()["data"]
        except (httpx.HTTPError, ValueError, KeyError) as e:
            rows.append((url, f"unreachable ({type(e).__name__})"))
            continue
        bases, loras = split_models(models)
        rows.append((url, f"base {', '.join(bases)}; {len(loras)} adapter(s) loaded" + (f": {', '.join(loras)}" if loras else "")))
    return rows


def api_key_from_env(name: str | None) -> str | None:
    return os.environ.get(name) if name else None
