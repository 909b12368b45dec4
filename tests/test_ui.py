"""The dashboard's views and charts on a hand-built store (values known in advance), its guard (no
writes, a token beyond 127.0.0.1, loopback Host names), its read-only connections, and the static
report. The browser tests are in test_ui_browser.py."""

from __future__ import annotations

import hashlib
import html
import os
import re
import socket
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from selfloop.db.engine import open_database
from selfloop.db.models import (
    Eval,
    EvalItem,
    Event,
    Example,
    Iteration,
    Judgment,
    Loop,
    Metric,
    PhaseRun,
    Prompt,
    Sample,
    TrainStep,
    Vote,
    WriterLease,
)
from selfloop.errors import ReadOnlyViolation, SelfloopError

PROMPTS = 120  # of iteration 1 of loop "a": three pages of 50


def build_store(url: str) -> dict[str, int]:
    """Loop "a" (vote only, 3 iterations: promoted, rejected, promoted) and "b", forked from a at 2
    (LLM judge too, 1 iteration, a running iteration 2 in its rollout at 3 of 10). Returns row ids."""
    db = open_database(url, init=True)
    ids: dict[str, int] = {}
    with db.session() as s:
        # stored snapshots as `selfloop run` writes them: valid configs (a vote-only loop trains TTRL)
        a = Loop(name="a", base_model="tiny", config={"loop": {"name": "a"}, "judge": {"signals": ["vote"]},
                                                      "train": {"algorithm": "ttrl"}}, config_hash="x",
                 main_metric="arithmetic/greedy_accuracy", seed=0, status="ready")
        s.add(a)
        s.flush()
        b = Loop(name="b", parent_loop_id=a.id, parent_iteration=2, base_model="tiny",
                 config={"loop": {"name": "b"}, "judge": {"signals": ["llm_judge", "vote"]}}, config_hash="y",
                 main_metric="arithmetic/greedy_accuracy", seed=0, status="ready")
        s.add(b)
        s.flush()
        for loop, number, promoted, value, status in ((a, 1, True, 0.5, "done"), (a, 2, False, 0.4, "done"),
                                                      (a, 3, True, 0.6, "done"), (b, 1, True, 0.7, "done"),
                                                      (b, 2, None, None, "running")):
            it = Iteration(loop_id=loop.id, number=number, status=status, promoted=promoted,
                           phase="promote" if status == "done" else "rollout")
            s.add(it)
            s.flush()
            ids[f"{loop.name}{number}"] = it.id
            if value is None:
                s.add(PhaseRun(iteration_id=it.id, phase="rollout", status="running", progress_done=3,
                               progress_total=10, progress_note="prompts"))
                continue
            s.add(Eval(iteration_id=it.id, role="candidate", suite="arithmetic", metric="greedy_accuracy", value=value,
                       n=10, ci_low=value - 0.1, ci_high=value + 0.1))
            s.add(Eval(iteration_id=it.id, role="candidate", suite="arithmetic", metric="mean_response_tokens",
                       value=30.0, n=10))
            s.add(Eval(iteration_id=it.id, role="baseline", suite="arithmetic", metric="greedy_accuracy",
                       value=value - 0.2, n=10, ci_low=value - 0.3, ci_high=value - 0.1))
            s.add(Metric(iteration_id=it.id, name="judge.vote_share", value=0.5 + number / 10))
            if loop is b:
                s.add(Metric(iteration_id=it.id, name="judge.mean_score", value=3.5))
            for step in range(3):
                s.add(TrainStep(iteration_id=it.id, step=step, loss=1.0 - step / 10, learning_rate=1e-4, grad_norm=1.0,
                                tokens_per_s=10.0))
            s.add(Event(loop_id=loop.id, iteration_id=it.id, level="info",
                        kind="promote.accepted" if promoted else "promote.rejected", message=f"decision {number}"))
        it = ids["a1"]
        for i in range(PROMPTS):
            p = Prompt(iteration_id=it, source="task", item_index=i, text=f"What is {i} + 1?", answer=str(i + 1),
                       family="arithmetic")
            s.add(p)
            s.flush()
            ids.setdefault("first_prompt", p.id)
            answers = [str(i + 1), "7"]
            for k, said in enumerate(answers):
                sample = Sample(prompt_id=p.id, sample_index=k, iteration_id=it, text=f"sample {k} of {i}: {said}",
                                token_ids=[1, 2], token_logprobs=[-0.5, -0.5], num_tokens=2, sum_logprob=-1.0,
                                mean_logprob=-0.5, finish_reason="stop", seed=k, temperature=1.0,
                                correct=said == str(i + 1))
                s.add(sample)
                s.flush()
                s.add(Judgment(sample_id=sample.id, kind="vote", judge_index=0, score=float(k == 0), parse_ok=True,
                               answer=said, details={"majority": str(i + 1)}))
                s.add(Judgment(sample_id=sample.id, kind="llm_judge", judge_index=0, score=4.0 - 2 * k, parse_ok=True,
                               raw=f"<b>Score: {4 - 2 * k}</b>"))
                ids[f"sample{i}.{k}"] = sample.id
            s.add(Vote(prompt_id=p.id, answer=str(i + 1), share=0.5, n_valid=2, n_votes=2, tie=True,
                       tied_answers=[str(i + 1), "7"], correct=True))
            s.add(Example(iteration_id=it, item_index=i, algorithm="dpo", prompt_id=p.id, sample_id=ids[f"sample{i}.0"],
                          rejected_sample_id=ids[f"sample{i}.1"], reward=1.0, weight=0.5))
        s.add(Prompt(iteration_id=it, source="self_instruct", item_index=0, text="Write a haiku."))
        s.add(WriterLease(loop_name="b", token=1, host=socket.gethostname(), pid=os.getpid(), kind="daemon"))
        for role in ("candidate", "baseline"):
            for i in range(10):
                s.add(EvalItem(iteration_id=it, role=role, suite="arithmetic", item_index=i, prompt=f"q{i}", answer="1",
                               response=f"r{i}", predicted="1" if i % 3 else "2", correct=bool(i % 3), num_tokens=3))
    db.dispose()
    return ids


@pytest.fixture
def store(sqlite_url: str) -> tuple[str, dict[str, int]]:
    return sqlite_url, build_store(sqlite_url)


def _session(url: str):
    from sqlalchemy.orm import Session

    from selfloop.db.reader_engine import reader_engine

    return Session(reader_engine(url))


def test_fork_curves_sit_on_the_fork_s_own_iteration_axis(store) -> None:
    from selfloop.ui.charts import loop_charts
    from selfloop.ui.views import loop_segments

    url, _ = store
    with _session(url) as s:
        segments = loop_segments(s, "b")
    parent, own = segments
    assert (parent.loop, parent.shift, parent.until, parent.own) == ("a", -2, 2, False)
    assert (own.loop, own.shift, own.until, own.own) == ("b", 0, None, True)
    assert parent.iterations == [1, 2] and own.iterations == [1, 2]  # a's iteration 3 is after the fork: left out
    # a's starting policy (baseline of its iteration 1) at x = 0 - 2; b's at x = 0, its iteration 1 at x = 1
    assert [(p.iteration + parent.shift, p.value) for p in parent.evals["arithmetic/greedy_accuracy"]] == \
        [(-2, pytest.approx(0.3)), (-1, 0.5), (0, 0.4)]
    assert [(p.iteration + own.shift, p.value) for p in own.evals["arithmetic/greedy_accuracy"]] == \
        [(0, pytest.approx(0.5)), (1, 0.7)]
    charts = {c["id"]: c for c in loop_charts(segments, judged=True)}
    accuracy = charts["eval-arithmetic"]["figure"]
    lines = [t for t in accuracy["data"] if t.get("mode") == "lines+markers"]
    assert [t["x"] for t in lines] == [[-2, -1, 0], [0, 1]]
    # the band: upper then lower (filled to it) per curve, from the stored ci_low/ci_high
    bands = [t for t in accuracy["data"] if t.get("fill") == "tonexty"]
    assert [pytest.approx(y) for y in bands[1]["y"]] == [0.4, 0.6]
    # decision markers: a's iteration 1 promoted, 2 rejected; each loop's starting policy a diamond
    assert lines[0]["marker"]["symbol"] == ["diamond", "triangle-up", "x"]
    assert lines[1]["marker"]["symbol"] == ["diamond", "triangle-up"]
    assert "mean_response_tokens" not in str(accuracy["data"])  # not an accuracy: not on the 0-1 axis
    assert [a["text"] for a in accuracy["layout"]["annotations"]] == ["fork: b"]
    assert accuracy["layout"]["shapes"][0]["x0"] == 0


def test_loss_breaks_between_iterations_and_judge_chart_follows_the_config(store) -> None:
    from selfloop.ui.charts import loop_charts
    from selfloop.ui.views import judges_with_llm, loop_segments

    url, _ = store
    with _session(url) as s:
        segments = loop_segments(s, "a")
        assert not judges_with_llm(s, ["a"]) and judges_with_llm(s, ["b"])
    charts = {c["id"]: c for c in loop_charts(segments, judged=False)}
    assert "judge_score" not in charts and "calibration" not in charts  # no LLM judge: no LLM-judge panel
    assert "collapse" in charts
    assert {c["id"] for c in loop_charts(segments, judged=True)} >= {"judge_score", "calibration", "collapse"}
    loss = [t for t in charts["loss"]["figure"]["data"] if t.get("name") == "a"][0]
    # three steps per iteration, a gap (None) between iterations, x counting steps across iterations
    assert loss["x"] == [0, 1, 2, None, 3, 4, 5, None, 6, 7, 8]
    assert loss["y"][4:6] == pytest.approx([1.0, 0.9])  # iteration 2, steps 0 and 1
    boundaries = charts["loss"]["figure"]["data"][0]
    assert [x for x in boundaries["x"] if x is not None][::2] == [0, 3, 6]
    vote = charts["vote"]["figure"]["data"][0]
    assert vote["x"] == [1, 2, 3] and vote["y"] == pytest.approx([0.6, 0.7, 0.8])


def test_two_loops_compared_on_one_axis(store) -> None:
    from selfloop.ui.charts import loop_charts
    from selfloop.ui.views import compared_segments

    url, _ = store
    with _session(url) as s:
        a, b = compared_segments(s, ["a", "b"])
    assert (a.shift, b.shift) == (0, 2)  # b's iteration 1 at a's iteration 3: both a + 3 iterations from the root
    charts = {c["id"]: c for c in loop_charts([a, b], judged=True, compare=True)}
    names = [t["name"] for t in charts["eval-arithmetic"]["figure"]["data"] if t.get("mode") == "lines+markers"]
    assert names == ["a: greedy_accuracy", "b: greedy_accuracy"]
    assert [t["x"] for t in charts["eval-arithmetic"]["figure"]["data"] if t.get("mode") == "lines+markers"][1] == [2, 3]


def test_sample_browser_pages_and_rows(store) -> None:
    from selfloop.ui import views

    url, ids = store
    with _session(url) as s:
        loop = views.get_loop(s, "a")
        it = views.get_iteration(s, loop, 1)
        first = views.iteration_prompts(s, it, "task", 1)
        last = views.iteration_prompts(s, it, "task", 3)
        every = views.iteration_prompts(s, it, None, 1)
        assert (first.total, first.pages, len(first.rows), len(last.rows)) == (PROMPTS, 3, 50, 20)
        assert every.total == PROMPTS + 1
        assert [r.item_index for r in last.rows] == list(range(100, 120))
        row = first.rows[7]
        assert (row.text, row.answer, row.samples, row.vote_answer, row.vote_correct, row.examples) == \
            ("What is 7 + 1?", "8", 2, "8", True, 1)
        assert row.mean_judge_score == pytest.approx(3.0)  # (4 + 2) / 2
        detail = views.prompt_detail(s, row.id)
        assert [x.text for x in detail.samples.rows] == ["sample 0 of 7: 8", "sample 1 of 7: 7"]
        right, wrong = detail.samples.rows
        assert (right.voted, right.correct, right.mean_judge_score) == ("8", True, 4.0)
        assert (wrong.voted, wrong.correct, wrong.mean_judge_score) == ("7", False, 2.0)
        assert [(j.kind, j.raw) for j in wrong.judgments] == [("llm_judge", "<b>Score: 2</b>"), ("vote", None)]
        assert [(e.algorithm, e.sample_index, e.rejected_index, e.weight) for e in detail.examples] == [("dpo", 0, 1, 0.5)]
        wrong_items = views.eval_items(s, it, "arithmetic", "candidate", "wrong")
        assert [x.item_index for x in wrong_items.rows] == [0, 3, 6, 9]
        assert views.eval_items(s, it, "arithmetic", "baseline", "right").total == 6
        assert [(x.role, x.items, x.right) for x in views.eval_suites(s, it)] == [("baseline", 10, 6), ("candidate", 10, 6)]
        with pytest.raises(SelfloopError, match="pages start at 1"):
            views.iteration_prompts(s, it, None, 0)
        with pytest.raises(LookupError):
            views.prompt_detail(s, 10**9)


def test_pages_read_big_tables_only_through_indexes(store) -> None:
    """Every statement the sample browser runs, explained by SQLite: no full scan of the tables that
    grow with the store (a page costs the same with a million samples; bench/ui.py measures it)."""
    from sqlalchemy import event

    from selfloop.db.reader_engine import reader_engine
    from selfloop.ui import views

    url, ids = store
    engine = reader_engine(url)
    statements = []
    event.listen(engine, "before_cursor_execute", lambda c, cur, stmt, params, ctx, many: statements.append((stmt, params)))
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        it = views.get_iteration(s, views.get_loop(s, "a"), 1)
        views.iteration_prompts(s, it, "task", 2)
        views.iteration_prompts(s, it, None, 1)
        views.prompt_detail(s, ids["first_prompt"])
        views.eval_items(s, it, "arithmetic", "candidate", "wrong")
        views.loop_segments(s, "b")
    engine.dispose()
    big = ("samples", "judgments", "prompts", "votes", "examples", "eval_items", "train_steps")
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    for stmt, params in statements:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {stmt}", params))
        scans = re.findall(r"SCAN (\w+)(?! USING)", plan)
        assert not [t for t in scans if t in big], f"{plan}\n{stmt}"
    conn.close()


def _client(url: str, token: str | None = None, host: str = "127.0.0.1"):
    from starlette.testclient import TestClient

    from selfloop.ui.app import create_app

    return TestClient(create_app(url, token=token), base_url=f"http://{host}:8765", follow_redirects=False)


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_no_request_writes_and_bad_parameters_are_one_line_errors(store) -> None:
    url, ids = store
    path = url.removeprefix("sqlite:///")
    before = _digest(path)
    client = _client(url)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for target in ("/", "/loops/a", "/api/loops", "/prompts/1"):
            response = client.request(method, target, content=b"DROP TABLE loops")
            assert response.status_code == 405 and "read-only" in response.text, (method, target)
    assert client.get("/loops/a/iterations/1?source=task;DROP TABLE loops").status_code == 400
    assert client.get("/loops/a/iterations/1?page=-1").status_code == 400
    assert client.get("/loops/a'; DELETE FROM loops; --").status_code == 404
    assert client.get("/loops/a/iterations/9").status_code == 404
    assert "no loop named" in client.get("/api/loops/nope").json()["error"]
    assert client.get("/loops/a/iterations/1/evals?suite=arithmetic&outcome=wrong").status_code == 200
    pages = ["/", "/loops/a", "/loops/b", "/compare?loop=a&loop=b", "/loops/a/iterations/1", f"/prompts/{ids['first_prompt']}",
             "/api/loops", "/api/loops/b", "/api/loops/b/charts", "/api/compare?loop=a&loop=b", "/static/plotly.min.js"]
    for target in pages:
        response = client.get(target)
        assert response.status_code == 200, (target, response.text[:300])
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert client.get("/api/loops/b").json()["progress"] == "running 3/10 (prompts)"
    writers = {x["name"]: x["writer"] for x in client.get("/api/loops").json()}
    assert writers == {"a": "", "b": f"daemon pid {os.getpid()} on {socket.gethostname()}"}
    iteration = html.unescape(client.get("/loops/a/iterations/1").text)
    for role in ("candidate", "baseline"):  # each suite and policy, linked to its items
        assert f'href="/loops/a/iterations/1/evals?suite=arithmetic&role={role}&outcome=wrong"' in iteration
    page = client.get(f"/prompts/{ids['first_prompt']}").text
    assert "&lt;b&gt;Score: 4&lt;/b&gt;" in page and "<b>Score: 4</b>" not in page  # the judge's text is escaped
    assert _digest(path) == before


def test_loopback_hosts_only_and_a_token_beyond_127_0_0_1(store, run_cli) -> None:
    url, _ = store
    assert _client(url, host="evil.example").get("/").status_code == 421  # DNS rebinding onto 127.0.0.1
    assert _client(url, host="localhost").get("/").status_code == 200
    token = "t0ken-of-at-least-16-chars"
    client = _client(url, token=token, host="10.1.2.3")
    assert client.get("/").status_code == 401 and client.get("/api/loops").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    assert client.get("/api/loops", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    given = client.get(f"/loops/a?token={token}")
    assert given.status_code == 303 and given.headers["location"].endswith("/loops/a")
    assert "httponly" in given.headers["set-cookie"].lower()
    assert client.get("/loops/a").status_code == 200  # the cookie now carries it
    code, _, err = run_cli("ui", "--db", url, "--host", "0.0.0.0", "--port", "8765")  # noqa: S104 - refused without a token
    assert code == 1 and "SELFLOOP_UI_TOKEN" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("ui", "--db", url, "--port", "70000")
    assert code == 1 and "--port 70000" in err


def test_reader_engine_cannot_write(reader_url: str, db_url: str) -> None:
    """The dashboard's connections: a write is refused by the database, whatever the statement."""
    from selfloop.db.reader_engine import reader_engine

    build_store(db_url) if db_url.startswith("sqlite") else None
    engine = reader_engine(reader_url)
    for statement in ("DELETE FROM loops", "INSERT INTO metrics (iteration_id, name, value) VALUES (1, 'x', 1)",
                      "UPDATE loops SET name = 'x'", "DROP TABLE events", "CREATE TABLE t (x int)"):
        with engine.connect() as conn, pytest.raises(Exception) as caught:
            conn.execute(text(statement))
            conn.commit()
        assert re.search(r"not authorized|read-only|permission denied", str(caught.value)), str(caught.value)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM loops")).scalar() >= 0
    engine.dispose()


@pytest.mark.postgres
def test_the_dashboard_refuses_a_postgres_role_that_can_write(postgres_url: str, postgres_reader_url: str) -> None:
    build_store(postgres_url)
    with pytest.raises(ReadOnlyViolation, match="create-reader"):
        _client(postgres_url)
    client = _client(postgres_reader_url)
    try:
        assert client.get("/api/loops").json()[0]["name"] == "a"
        assert client.get("/loops/b").status_code == 200 and client.get("/loops/a/iterations/1?page=3").status_code == 200
    finally:  # the reader's pooled connections: the test database is dropped next, and the role cannot be signalled
        client.app.state.engine.dispose()


def test_report_is_an_offline_folder_drawn_from_the_dashboard_charts(store, tmp_path: Path, run_cli) -> None:
    import json

    url, _ = store
    out = tmp_path / "report"
    code, stdout, err = run_cli("report", "b", "--db", url, "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "plotly.min.js", "selfloop.js", "style.css"]
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere: opens offline
    charts = json.loads(re.search(r'<script type="application/json" id="charts-data">(.*?)</script>', page, re.S).group(1))
    from selfloop.ui.charts import loop_charts
    from selfloop.ui.views import loop_segments

    with _session(url) as s:
        assert charts == json.loads(json.dumps(loop_charts(loop_segments(s, "b"), judged=True)))
    assert "a (to iteration 2)" in page and "promote.accepted" in page and "decision 1" in page
    assert "now: iteration 2, rollout running 3/10 (prompts)" in page  # a running phase shows before it ends
    code, _, err = run_cli("report", "nope", "--db", url, "--out", str(tmp_path / "x"))
    assert code == 1 and "no loop named 'nope'" in err


def test_a_store_with_an_older_schema_is_refused_with_the_upgrade_command(sqlite_url: str, run_cli) -> None:
    from selfloop.db.engine import make_engine
    from selfloop.db.migrate import downgrade

    build_store(sqlite_url)
    engine = make_engine(sqlite_url)
    downgrade(engine, "0004")
    engine.dispose()
    code, _, err = run_cli("ui", "--db", sqlite_url, "--port", "8765")
    assert code == 3 and "selfloop db upgrade" in err
    code, _, err = run_cli("ui", "--db", sqlite_url + "-missing", "--port", "8765")
    assert code == 1 and "no database at" in err


def test_a_loop_page_links_to_its_config(store) -> None:
    """What a researcher asks first of a loop: its learning rate, beta, algorithm."""
    url, _ = store
    client = _client(url)
    loop = client.get("/loops/a")
    assert loop.status_code == 200 and 'href="/loops/a/config"' in loop.text
    page = client.get("/loops/a/config")
    assert page.status_code == 200
    for field in ("train.learning_rate", "train.algorithm", "train.dpo.beta", "generation.samples_per_prompt"):
        assert f"<code>{field}</code>" in page.text, field
    assert client.get("/loops/nope/config").status_code == 404


@pytest.mark.integration
def test_a_loop_whose_phase_failed_looks_failed(sqlite_url: str, config_factory, monkeypatch, run_cli) -> None:
    """It showed as 'ready' with a full progress bar; `selfloop status` and the dashboard say it failed, and why."""
    from selfloop import loop as loop_module
    from selfloop.db.engine import open_database
    from selfloop.loop import open_loop, run_iteration
    from selfloop.runtime import Runtime

    def boom(ctx) -> None:
        raise RuntimeError("the judge ran out of memory")

    config = config_factory(sqlite_url, loop={"name": "broken", "phases": ["rollout", "judge"], "max_iterations": 1})
    db = open_database(sqlite_url, init=True)
    open_loop(db, config)
    monkeypatch.setitem(loop_module.PHASES, "judge", boom)
    with pytest.raises(RuntimeError):
        run_iteration(db, config, Runtime(config))
    db.dispose()
    code, out, _ = run_cli("status", "--db", sqlite_url)
    assert code == 0 and "failed" in out and "judge failed: RuntimeError: the judge ran out of memory" in out, out
    page = _client(sqlite_url).get("/loops/broken")
    assert page.status_code == 200 and 'class="status-failed">failed</span>' in page.text
    assert "judge failed: RuntimeError: the judge ran out of memory" in page.text


def test_the_items_that_flipped_between_the_start_and_the_candidate(store) -> None:
    """Which held-out items did training win or lose? (a researcher's first question after the gain itself)"""
    from sqlalchemy import select, update

    url, _ = store
    db = open_database(url)
    with db.session() as s:  # the baseline missed item 1 (the candidate got it) and got item 3 (the candidate missed it)
        it = s.scalar(select(Iteration.id).join(Loop, Loop.id == Iteration.loop_id).where(Loop.name == "a", Iteration.number == 1))
        for index, correct in ((1, False), (3, True)):
            s.execute(update(EvalItem).where(EvalItem.iteration_id == it, EvalItem.role == "baseline",
                                             EvalItem.item_index == index).values(correct=correct))
    db.dispose()
    client = _client(url)

    def shown(role: str, outcome: str) -> list[str]:
        page = client.get(f"/loops/a/iterations/1/evals?suite=arithmetic&role={role}&outcome={outcome}")
        assert page.status_code == 200
        return re.findall(r'<td class="text">(q\d+)</td>', page.text)

    assert shown("candidate", "gained") == ["q1"] and shown("candidate", "lost") == ["q3"]
    assert shown("baseline", "gained") == ["q3"] and shown("baseline", "lost") == ["q1"]
    assert 'outcome=gained"' in client.get("/loops/a/iterations/1/evals?suite=arithmetic").text


def test_the_iteration_page_says_what_the_loop_rewarded(store) -> None:
    """Rewarded-and-right against rewarded-and-wrong, with example prompts one click away (the TTRL demo's vote
    rewarded operands copied from sentences that gave no answer, and no page said so)."""
    from sqlalchemy import select, update

    url, ids = store
    db = open_database(url)
    with db.session() as s:  # one wrong sample rewarded: the second sample of the first prompt
        s.execute(update(Judgment).where(Judgment.sample_id == ids["sample0.1"], Judgment.kind == "vote").values(score=1.0))
        votes = s.execute(select(Judgment.score, Sample.correct).join(Sample, Sample.id == Judgment.sample_id)
                          .where(Judgment.kind == "vote")).all()
    db.dispose()
    expected = {(bool(score), right): 0 for score, right in votes}
    for score, right in votes:
        expected[(bool(score), right)] += 1
    page = _client(url).get("/loops/a/iterations/1").text
    assert "What the loop rewarded" in page
    rows = re.findall(r"<tr[^>]*><td>(rewarded|not rewarded)</td>\s*<td>(right|wrong|unchecked)</td><td class=\"n\">(\d+)</td>", page)
    assert {(a == "rewarded", b == "right"): int(n) for a, b, n in rows} == expected and expected[(True, False)] == 1
    assert f'href="/prompts/{ids["first_prompt"]}"' in page.split("What the loop rewarded")[1].split("<h2>")[0]


def test_the_config_page_shows_what_was_set_first_and_what_a_fork_changed(store) -> None:
    """It listed about 250 rows in the models' order. Now: a fork's differences from its parent, then the fields set
    to other values than the defaults, then the defaults (folded)."""
    url, _ = store
    page = _client(url).get("/loops/b/config").text
    changed = page.split('id="config-changed"')[1].split("</table>")[0]
    assert "<code>judge.signals</code>" in changed and "<code>train.algorithm</code>" in changed
    assert "<code>loop.name</code>" not in changed and changed.count("<code>") == 2  # what every fork differs in is no choice
    assert 'href="/loops/a/config"' in page
    set_ = page.split('id="config-set"')[1].split("</table>")[0]
    folded = page.split('id="config-defaults"')[1].split("</details>")[0]
    assert "<code>judge.signals</code>" in set_ and "<code>train.learning_rate</code>" not in set_
    assert "<code>train.learning_rate</code>" in folded and "<code>judge.signals</code>" not in folded
    assert page.index('id="config-changed"') < page.index('id="config-set"') < page.index('id="config-defaults"')
    a = _client(url).get("/loops/a/config").text
    assert 'id="fork-differences"' not in a and "<code>train.algorithm</code>" in a.split('id="config-set"')[1].split("</table>")[0]
