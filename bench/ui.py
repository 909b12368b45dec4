"""Dashboard page times on a store with a million samples.

Builds (once; reused while its row counts match) an SQLite store with the selfloop schema holding one
loop of ITERATIONS iterations, each with its prompts, SAMPLES_PER_PROMPT samples per prompt, two
judgments per sample (vote and LLM judge), a vote and a training pair per prompt, held-out items,
metrics, evals, training steps and events, plus a fork of it. Then starts `selfloop ui` on it (a real
server, read-only connections) and times each kind of page over HTTP: the first request and the median
of --repeat more. With Chromium installed, it also times pages in the browser until the load event
(and, on the loop page, until its charts are drawn). Prints one line of JSON.

    python bench/ui.py [--samples 1000000] [--store .bench/ui-store.db]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ITERATIONS = 100
SAMPLES_PER_PROMPT = 8
EVAL_ITEMS = 200  # per suite and role
STEPS = 50  # training steps per iteration


def build_store(path: Path, samples: int) -> dict[str, int]:
    """The store, written with plain executemany in one transaction per table (minutes, once)."""
    sys.path.insert(0, str(REPO))
    from selfloop.db.engine import open_database

    prompts_per_iteration = samples // (ITERATIONS * SAMPLES_PER_PROMPT)
    expected = prompts_per_iteration * ITERATIONS * SAMPLES_PER_PROMPT
    if path.exists():
        with sqlite3.connect(path) as conn:
            try:
                if conn.execute("SELECT count(*) FROM samples").fetchone()[0] == expected:
                    return counts(path)
            except sqlite3.Error:
                pass
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    open_database(f"sqlite:///{path}", init=True).dispose()
    rng = random.Random(0)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    now = "2026-11-23 00:00:00"
    config = json.dumps({"judge": {"signals": ["llm_judge", "vote", "confidence"]}})
    conn.execute("INSERT INTO loops (id, name, base_model, config, config_hash, main_metric, seed, status, created_at, "
                 "updated_at) VALUES (1, 'big', 'tiny', ?, 'x', 'arithmetic/greedy_accuracy', 0, 'finished', ?, ?)",
                 (config, now, now))
    conn.execute("INSERT INTO loops (id, name, parent_loop_id, parent_iteration, base_model, config, config_hash, "
                 "main_metric, seed, status, created_at, updated_at) VALUES (2, 'big-fork', 1, 50, 'tiny', ?, 'x', "
                 "'arithmetic/greedy_accuracy', 0, 'ready', ?, ?)", (config, now, now))
    iteration_id = prompt_id = sample_id = 0
    for loop_id, iterations in ((1, ITERATIONS), (2, 10)):
        for number in range(1, iterations + 1):
            iteration_id += 1
            promoted = number % 3 != 0
            conn.execute("INSERT INTO iterations (id, loop_id, number, status, phase, promoted, started_at, finished_at, "
                         "created_at) VALUES (?, ?, ?, 'done', 'promote', ?, ?, ?, ?)",
                         (iteration_id, loop_id, number, promoted, now, now, now))
            conn.executemany("INSERT INTO metrics (iteration_id, name, value, created_at) VALUES (?, ?, ?, ?)",
                             [(iteration_id, name, value, now) for name, value in (
                                 ("judge.mean_score", 2 + rng.random()), ("judge.vote_share", 0.5 + rng.random() / 3),
                                 ("judge.label_accuracy", 0.4 + rng.random() / 3),
                                 ("drift.mean_response_tokens", 40 + 10 * rng.random()),
                                 ("train.last_loss", 0.7 - number / 400))])
            for role in ("candidate", "baseline"):
                value = 0.3 + number / 500 + rng.random() / 20
                conn.execute("INSERT INTO evals (iteration_id, role, suite, metric, value, n, ci_low, ci_high, created_at) "
                             "VALUES (?, ?, 'arithmetic', 'greedy_accuracy', ?, ?, ?, ?, ?)",
                             (iteration_id, role, value, EVAL_ITEMS, value - 0.06, value + 0.06, now))
                conn.executemany(
                    "INSERT INTO eval_items (iteration_id, role, suite, item_index, prompt, answer, response, predicted, "
                    "correct, majority_correct, num_tokens, created_at) VALUES (?, ?, 'arithmetic', ?, ?, ?, ?, ?, ?, NULL, 12, ?)",
                    [(iteration_id, role, i, f"What is {i} + {number}?", str(i + number), f"The answer is {i + number + (i % 3 == 0)}.",
                      str(i + number + (i % 3 == 0)), i % 3 != 0, now) for i in range(EVAL_ITEMS)])
            conn.executemany("INSERT INTO train_steps (iteration_id, step, loss, learning_rate, grad_norm, tokens_per_s, "
                             "created_at) VALUES (?, ?, ?, 1e-4, 1.0, 100.0, ?)",
                             [(iteration_id, s, 0.7 - s / 200 + rng.random() / 50, now) for s in range(STEPS)])
            conn.executemany("INSERT INTO events (loop_id, iteration_id, level, kind, message, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                             [(loop_id, iteration_id, "info", "promote.accepted" if promoted else "promote.rejected",
                               f"iteration {number} {'promoted' if promoted else 'rejected'}", now),
                              (loop_id, iteration_id, "info", "iteration.done", f"iteration {number} done", now)])
            if loop_id != 1:
                continue
            prompts, samples_rows, judgments, votes, examples = [], [], [], [], []
            for item in range(prompts_per_iteration):
                prompt_id += 1
                answer = str(item % 97)
                prompts.append((prompt_id, iteration_id, "task", item, f"arith:{item}", f"What is {item} + 0? ({number})", answer, now))
                first = sample_id + 1
                for k in range(SAMPLES_PER_PROMPT):
                    sample_id += 1
                    said = answer if k % 3 else str(item % 89)
                    samples_rows.append((sample_id, prompt_id, k, iteration_id, f"Let me add. The answer is {said}.",
                                         "[1, 2, 3, 4, 5, 6, 7, 8]", "[-0.1, -0.2, -0.1, -0.3, -0.1, -0.2, -0.1, -0.1]",
                                         8, -1.2, -0.15, "stop", k, 1.0, now))
                    judgments.append((sample_id, "vote", 0, 1.0 if said == answer else 0.0, True, None, said,
                                      json.dumps({"majority": answer, "correct": said == answer}), now))
                    judgments.append((sample_id, "llm_judge", 0, float(rng.randint(0, 5)), True,
                                      "The response is relevant and answers the question. Score: 4", None, None, now))
                votes.append((prompt_id, answer, 5 / 8, 8, 8, False, True, now))
                examples.append((iteration_id, item, "dpo", prompt_id, first + 1, first, 1.0, 1.0, now))
            conn.executemany("INSERT INTO prompts (id, iteration_id, source, item_index, task_key, text, answer, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", prompts)
            conn.executemany("INSERT INTO samples (id, prompt_id, sample_index, iteration_id, text, token_ids, token_logprobs, "
                             "num_tokens, sum_logprob, mean_logprob, finish_reason, seed, temperature, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", samples_rows)
            conn.executemany("INSERT INTO judgments (sample_id, kind, judge_index, score, parse_ok, raw, answer, details, "
                             "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", judgments)
            conn.executemany("INSERT INTO votes (prompt_id, answer, share, n_valid, n_votes, tie, correct, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", votes)
            conn.executemany("INSERT INTO examples (iteration_id, item_index, algorithm, prompt_id, sample_id, "
                             "rejected_sample_id, reward, weight, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", examples)
            conn.commit()
            print(f"store: iteration {number}/{iterations}, {sample_id} samples", file=sys.stderr, flush=True)
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    return counts(path)


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("loops", "iterations", "prompts", "samples", "judgments", "votes", "examples", "eval_items",
                          "train_steps", "metrics", "events")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pages(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        n = conn.execute("SELECT count(*) FROM prompts WHERE iteration_id = 50").fetchone()[0]
        middle = conn.execute("SELECT id FROM prompts WHERE iteration_id = 50 ORDER BY item_index LIMIT 1 OFFSET ?",
                              (n // 2,)).fetchone()[0]
        last_page = -(-n // 50)
    return {
        "loops": "/",
        "loop": "/loops/big",
        "loop_charts_json": "/api/loops/big/charts",
        "fork_charts_json": "/api/loops/big-fork/charts",
        "compare_charts_json": "/api/compare?loop=big&loop=big-fork",
        "iteration_prompts_first_page": "/loops/big/iterations/50",
        "iteration_prompts_last_page": f"/loops/big/iterations/50?page={last_page}",
        "prompt_samples_judgments": f"/prompts/{middle}",
        "eval_items_wrong": "/loops/big/iterations/50/evals?suite=arithmetic&outcome=wrong",
        "live_state_json": "/api/loops",
    }


def time_http(base: str, urls: dict[str, str], repeat: int) -> dict[str, dict[str, float]]:
    import httpx

    out = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, url in urls.items():
            times = []
            for _ in range(repeat + 1):
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            out[name] = {"first_ms": round(times[0], 1), "median_ms": round(statistics.median(times[1:]), 1),
                         "max_ms": round(max(times[1:]), 1), "bytes": len(response.content)}
    return out


def time_browser(base: str, urls: dict[str, str]) -> dict[str, float] | None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    out = {}
    try:
        for name in ("loop", "iteration_prompts_first_page", "prompt_samples_judgments", "eval_items_wrong"):
            browser.get(base + urls[name])  # once to warm the cache (plotly.min.js)
            started = time.perf_counter()
            browser.get(base + urls[name])
            if name == "loop":
                WebDriverWait(browser, 60).until(lambda b: b.execute_script(
                    "return document.getElementById('charts').dataset.drawn"))
                out["loop_until_charts_drawn_ms"] = round((time.perf_counter() - started) * 1000, 1)
            else:
                out[f"{name}_load_ms"] = browser.execute_script(
                    "const t = performance.getEntriesByType('navigation')[0]; return Math.round(t.loadEventEnd - t.startTime);")
    finally:
        browser.quit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path, default=REPO / ".bench" / "ui-store.db")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = build_store(args.store, args.samples)
    built_s = time.perf_counter() - started
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "selfloop", "ui", "--db", f"sqlite:///{args.store}", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    try:
        line = server.stdout.readline()
        if "selfloop ui:" not in line:
            raise SystemExit(f"selfloop ui did not start: {line}{server.stdout.read()[-2000:]}")
        base = f"http://127.0.0.1:{port}"
        urls = pages(args.store)
        http = time_http(base, urls, args.repeat)
        browser = time_browser(base, urls)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps({
        "bench": "ui", "store": {"backend": "sqlite", "rows": rows, "bytes": args.store.stat().st_size,
                                 "built_or_checked_s": round(built_s, 1)},
        "server": "selfloop ui (uvicorn, one process, read-only SQLite connections)",
        "page_size": 50, "http": http, "browser": browser,
        "slowest_median_ms": max(v["median_ms"] for v in http.values()),
    }))


if __name__ == "__main__":
    main()
