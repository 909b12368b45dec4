"""The vllm-server engine against servers whose replies are not to be trusted.

The hostile server here is a small HTTP server of the test's own (a real socket on 127.0.0.1), not vLLM:
what is tested is what the engine does with replies vLLM would never send. Every bad reply counts as
that server failing: the request goes to another server, and when none answers well the call fails in
one line that names the server and the problem. Nothing unchecked reaches a Completion.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfloop.engines.base import Sampling
from selfloop.engines.vllm_server import ServerError, VLLMServerEngine

GOOD = {"text": "ab", "token_ids": [5, 6], "logprobs": {"token_logprobs": [-0.5, -0.25]}, "finish_reason": "stop"}
BAD = {
    "id beyond the vocabulary": ('{"choices": [%s]}' % json.dumps({**GOOD, "token_ids": [5, 10**6]}), "outside the vocabulary"),
    "positive log-prob": ('{"choices": [%s]}' % json.dumps({**GOOD, "logprobs": {"token_logprobs": [5.0, -0.1]}}), "log-prob 5.0"),
    "NaN log-prob": ('{"choices": [{"text": "ab", "token_ids": [5, 6], "logprobs": {"token_logprobs": [NaN, -0.1]}}]}', "log-prob nan"),
    "malformed JSON": ('{"choices": [', "not valid JSON"),
    "no choices": ('{"choices": []}', "expected 1 choice(s), got 0"),
    "counts differ": ('{"choices": [%s]}' % json.dumps({**GOOD, "token_ids": [5]}), "1 token ids but 2 log-probs"),
    "too many tokens": ('{"choices": [%s]}' % json.dumps({**GOOD, "token_ids": [5] * 9, "logprobs": {"token_logprobs": [-1.0] * 9}}),
                        "above max_tokens"),
    "not an object": ("[1, 2]", "not a JSON object"),
    "log-prob of -1e308": ('{"choices": [%s]}' % json.dumps({**GOOD, "logprobs": {"token_logprobs": [-1e308, -0.1]}}),
                           "log-prob -1e+308"),
    "a megabyte of text for two tokens": ('{"choices": [%s]}' % json.dumps({**GOOD, "text": "x" * 1_000_000}),
                                          "1000000 characters of text for 2 tokens"),
}


class _Server:
    def __init__(self, body: str) -> None:
        self.body, self.requests = body, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests += 1
                data = outer.body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfloop.engines import vllm_server

    monkeypatch.setattr(vllm_server, "RETRY_BACKOFF_S", 0.0)  # the waits between tries are not what is tested


def _engine(tiny_model, servers) -> VLLMServerEngine:
    return VLLMServerEngine(tiny_model.path, [s.url for s in servers], served_model="m", retries=1, check=False)


CHATS = [[{"role": "user", "content": "What is 2 + 2?"}]]
SAMPLING = Sampling(n=1, temperature=1.0, max_new_tokens=4)


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_reply_fails_over_to_a_good_server(tiny_model, case: str) -> None:
    bad, good = _Server(BAD[case][0]), _Server(json.dumps({"choices": [GOOD]}))
    engine = _engine(tiny_model, [bad, good])
    try:
        outs = engine.generate(CHATS * 2, SAMPLING, seeds=[[1], [2]])
    finally:
        engine.close()
        bad.close()
        good.close()
    assert bad.requests >= 1 and good.requests >= 2
    assert [(c.token_ids, c.token_logprobs) for row in outs for c in row] == [([5, 6], [-0.5, -0.25])] * 2


@pytest.mark.parametrize("case", list(BAD))
def test_when_every_server_replies_badly_the_call_fails_in_one_line(tiny_model, case: str) -> None:
    body, problem = BAD[case]
    bad = _Server(body)
    engine = _engine(tiny_model, [bad])
    try:
        with pytest.raises(ServerError) as info:
            engine.generate(CHATS, SAMPLING, seeds=[[1]])
    finally:
        engine.close()
        bad.close()
    message = str(info.value)
    assert bad.url in message and problem in message and "\n" not in message, message


def test_the_reason_a_lone_server_left_the_rotation_is_kept(tiny_model) -> None:
    """Many requests at once to the only server, which replies badly: a request that finds no server left said
    "no vLLM server is reachable", losing why; the error names the bad reply."""
    body, problem = BAD["log-prob of -1e308"]
    bad = _Server(body)
    engine = _engine(tiny_model, [bad])
    try:
        with pytest.raises(ServerError) as info:
            engine.generate(CHATS * 8, SAMPLING, seeds=[[i] for i in range(8)])
    finally:
        engine.close()
        bad.close()
    message = str(info.value)
    assert problem in message and "reachable" not in message and "\n" not in message, message
