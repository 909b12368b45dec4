"""The dashboard in a real browser: `selfloop ui` (a real server) on a tiny loop's database (two
iterations, a fork with one more, and a loop without an LLM judge), driven by Debian's headless Chromium
through chromium-driver.

Screenshots of each page go to $SELFLOOP_TEST_SCREENSHOTS (default: a pytest temporary directory),
out of the repository. Without chromium these tests skip, unless SELFLOOP_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import selfloop_cli, tiny_yaml

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{tmp / 'selfloop.db'}"
    # "plain": one iteration without an LLM judge (no judge column or card on its pages), curated by the vote-share
    # band and a budget of 3 prompts (the dropped ones say why)
    plain = tiny_yaml(tmp, url, name="plain.yaml", loop__name="plain", loop__max_iterations=1,
                      judge__signals=["vote", "confidence"],
                      curate={"filters": ["band"], "band": {"above": 0.0, "below": 1.0}, "budget": 3})
    for args in (("run", "--config", str(tiny_yaml(tmp, url))),
                 ("fork", "tiny", "--at", "1", "--name", "tiny-b", "--db", url, "--set", "train.learning_rate=2e-3"),
                 ("resume", "tiny-b", "--db", url, "--iterations", "1"),
                 ("run", "--config", str(plain))):
        out = selfloop_cli(*args, env={"SELFLOOP_STATE_DIR": str(tmp / "state")})
        assert out.returncode == 0, out.stderr[-2000:]
    return url, tmp


@pytest.fixture(scope="module")
def server(store: tuple[str, Path]) -> str:
    url, _ = store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "selfloop", "ui", "--db", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "selfloop ui: http://127.0.0.1:" in line, line + proc.stdout.read()[-2000:] if proc.poll() is not None else line
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("SELFLOOP_REQUIRE_BROWSER") == "1":
            pytest.fail("SELFLOOP_REQUIRE_BROWSER=1 but chromium or chromedriver is missing "
                        "(tests/support/services.sh installs Debian's chromium and chromium-driver)")
        pytest.skip("no chromium and chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_ = webdriver.Chrome(service=Service(driver), options=options)
    driver_.set_script_timeout(30)
    yield driver_
    driver_.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("SELFLOOP_TEST_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(browser, url: str, charts: bool = False) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")
    if charts:
        wait.until(lambda b: b.execute_script("const c = document.getElementById('charts'); return c && c.dataset.drawn"))


def _errors(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _shoot(browser, path: Path) -> None:
    width = browser.get_window_size()["width"]  # the width the page was drawn at
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(max(height, 800), 4000))
    browser.save_screenshot(str(path))
    browser.set_window_size(width, 1000)


def _rows(url: str, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_every_page_loads_without_console_errors_and_its_charts_draw(store, server, browser, shots) -> None:
    url, _ = store
    prompt = _rows(url, "SELECT p.id FROM prompts p JOIN iterations i ON i.id = p.iteration_id JOIN loops l ON "
                        "l.id = i.loop_id WHERE l.name = 'tiny' AND i.number = 1 ORDER BY p.source, p.item_index")[0][0]
    pages = [("loops", "/", False), ("loop", "/loops/tiny", True), ("fork", "/loops/tiny-b", True),
             ("compare", "/compare?loop=tiny&loop=tiny-b", True), ("iteration", "/loops/tiny/iterations/1", False),
             ("prompt", f"/prompts/{prompt}", False),
             ("evals", "/loops/tiny/iterations/2/evals?suite=arithmetic&outcome=wrong", False)]
    for name, path, charts in pages:
        _open(browser, server + path, charts)
        assert _errors(browser) == [], (path, _errors(browser))
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280, path  # no overflow at 1280 px
        if charts:
            drawn = browser.execute_script("""
                return [...document.querySelectorAll('#charts .chart')].map(el => [el.id,
                    el.querySelectorAll('svg.main-svg').length, el.querySelectorAll('.scatterlayer .trace').length,
                    el.querySelector('.note') ? el.querySelector('.note').textContent : null]);""")
            assert drawn and all(svgs > 0 and traces > 0 or note for _, svgs, traces, note in drawn), drawn
            ids = [d[0] for d in drawn]
            assert "chart-eval-arithmetic" in ids and "chart-loss" in ids, ids
        _shoot(browser, shots / f"{name}.png")
    assert len(list(shots.glob("*.png"))) >= len(pages)
    print(f"screenshots: {shots}")


def test_the_sample_browser_shows_the_rows_the_database_holds(store, server, browser) -> None:
    from selenium.webdriver.common.by import By

    url, _ = store
    prompt_id, text, answer = _rows(url, """
        SELECT p.id, p.text, p.answer FROM prompts p JOIN iterations i ON i.id = p.iteration_id JOIN loops l ON l.id = i.loop_id
        WHERE l.name = 'tiny-b' AND i.number = 1 AND p.source = 'task' ORDER BY p.item_index LIMIT 1 OFFSET 2""")[0]
    _open(browser, server + "/loops/tiny-b/iterations/1?source=task")
    browser.find_element(By.CSS_SELECTOR, f'a[href="/prompts/{prompt_id}"]').click()  # navigate as a user would
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith(f"/prompts/{prompt_id}"))
    assert browser.find_element(By.ID, "prompt-text").get_attribute("textContent") == text
    assert browser.find_element(By.ID, "known-answer").text == (answer or "none (not verifiable)")
    samples = _rows(url, "SELECT id, sample_index, text FROM samples WHERE prompt_id = ? ORDER BY sample_index", prompt_id)
    shown = browser.find_elements(By.CSS_SELECTOR, "article.sample")
    assert [int(a.get_attribute("data-sample-index")) for a in shown] == [s[1] for s in samples]
    for (sample_id, _, body), article in zip(samples, shown):
        assert article.find_element(By.CSS_SELECTOR, "pre.text").get_attribute("textContent") == body
        judgments = _rows(url, "SELECT kind, score, raw, answer, reward_mode, reward, reward_ok FROM judgments "
                               "WHERE sample_id = ? ORDER BY kind, judge_index", sample_id)
        rows = article.find_elements(By.CSS_SELECTOR, "table.judgments tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [j[0] for j in judgments]
        for (_kind, score, raw, extracted, mode, reward, reward_ok), row in zip(judgments, rows):
            cells = row.find_elements(By.TAG_NAME, "td")
            assert cells[2].text == ("" if score is None else f"{score:.3g}")  # as judged
            assert cells[4].text == ("" if mode is None else  # the reward trained on, where a transform set one
                                     f"{reward:.3g} ({mode})" if reward_ok else f"none ({mode})")
            assert cells[5].text == (extracted or "")
            raws = row.find_elements(By.CSS_SELECTOR, "pre.raw")
            assert (raws[0].get_attribute("textContent") if raws else None) == (raw or None)
    vote = _rows(url, "SELECT answer FROM votes WHERE prompt_id = ?", prompt_id)
    if vote:
        assert browser.find_element(By.ID, "majority").text.startswith(vote[0][0] if vote[0][0] is not None else "no valid answer")
    examples = _rows(url, "SELECT count(*) FROM examples WHERE prompt_id = ?", prompt_id)[0][0]
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.examples tbody tr")) == examples
    # held-out items: from the iteration page, the candidate's wrong answers on arithmetic
    _open(browser, server + "/loops/tiny-b/iterations/1")
    browser.find_element(By.CSS_SELECTOR, 'a[href$="suite=arithmetic&role=candidate&outcome=wrong"]').click()
    WebDriverWait(browser, 30).until(lambda b: "outcome=wrong" in b.current_url)
    wrong = _rows(url, """SELECT e.item_index, e.response FROM eval_items e JOIN iterations i ON i.id = e.iteration_id
        JOIN loops l ON l.id = i.loop_id WHERE l.name = 'tiny-b' AND i.number = 1 AND e.role = 'candidate'
        AND e.suite = 'arithmetic' AND NOT e.correct ORDER BY e.item_index""")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.eval-items tbody tr")
    assert [int(r.find_element(By.TAG_NAME, "td").text) for r in rows] == [i for i, _ in wrong[:50]]
    assert [r.find_element(By.CSS_SELECTOR, "pre.raw").get_attribute("textContent") for r in rows] == [x for _, x in wrong[:50]]
    assert _errors(browser) == []


def _digest(url: str) -> str:
    path = Path(url.removeprefix("sqlite:///"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())).hexdigest()


def test_a_request_that_tries_to_write_is_refused(store, server, browser) -> None:
    url, _ = store
    before = _digest(url)
    _open(browser, server + "/loops/tiny")
    statuses = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all(['POST', 'PUT', 'DELETE', 'PATCH'].map(m =>
            fetch('/loops/tiny', {method: m, body: m === 'DELETE' ? null : 'DROP TABLE loops'}).then(r => r.status)))
          .then(done);""")
    assert statuses == [405, 405, 405, 405]
    form = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/compare?loop=tiny&loop=tiny-b', {method: 'POST', body: new URLSearchParams({loop: 'x'})})
          .then(r => r.text().then(t => done([r.status, t])));""")
    assert form[0] == 405 and "read-only" in form[1]
    assert _digest(url) == before


def test_the_static_report_opens_offline_and_draws(store, browser, shots) -> None:
    url, tmp = store
    out = selfloop_cli("report", "tiny-b", "--db", url, "--out", str(tmp / "report"))
    assert out.returncode == 0, out.stderr[-2000:]
    _open(browser, (tmp / "report" / "index.html").as_uri(), charts=True)
    assert _errors(browser) == []
    assert browser.execute_script("return document.querySelectorAll('#charts svg.main-svg').length") > 0
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280
    page = browser.page_source
    assert "promote." in page and "tiny (to iteration 1)" in page
    _shoot(browser, shots / "report.png")


def test_live_progress_refreshes_by_itself(store, server, browser) -> None:
    """A writer moves a running phase along; the open pages follow without being reloaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    from selfloop.db.engine import open_database
    from selfloop.db.models import Iteration, Loop, PhaseRun

    url, _ = store
    db = open_database(url)
    with db.session() as s:
        loop = s.query(Loop).filter_by(name="tiny-b").one()
        it = Iteration(loop_id=loop.id, number=99, status="running", phase="rollout")
        s.add(it)
        s.flush()
        run = PhaseRun(iteration_id=it.id, phase="rollout", status="running", progress_done=2, progress_total=9)
        s.add(run)
        s.flush()
        ids = (it.id, run.id)
    try:
        for page, selector in (("/", 'tr[data-loop="tiny-b"] td.live'), ("/loops/tiny-b", "#state")):
            _open(browser, server + page)
            browser.execute_script("window.__same_page = true;")
            for done in (2, 5):
                with db.session() as s:
                    s.get(PhaseRun, ids[1]).progress_done = done
                WebDriverWait(browser, 20).until(lambda b, done=done, selector=selector: f"{done}/9" in b.execute_script(
                    "return document.querySelector(arguments[0]).textContent", selector))
            assert browser.execute_script("return window.__same_page === true"), "the page reloaded instead of updating"
            assert "iteration 99" in browser.execute_script("return document.querySelector(arguments[0]).textContent", selector)
    finally:
        with db.session() as s:
            s.delete(s.get(PhaseRun, ids[1]))
            s.delete(s.get(Iteration, ids[0]))
        db.dispose()


def _text(browser, selector: str) -> str:
    return browser.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null", selector)


def test_what_a_researcher_asks_first(store, server, browser, shots) -> None:
    """A finished loop says so (and still does after a live refresh); a sample's extracted answer is marked where
    the loop's extractors read it; a loop without an LLM judge shows no judge column; the config page, the
    rewarded-right/wrong summary and the items that flipped are one click from the pages that name them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from selfloop.families.answers import extract_answer, normalise

    url, _ = store
    _open(browser, server + "/")
    for name, done in (("tiny", 2), ("plain", 1)):
        assert _rows(url, "SELECT status FROM loops WHERE name = ?", name) == [("finished",)]
        selector = f'tr[data-loop="{name}"] td.live'
        expected = f"finished: {done} iteration{'' if done == 1 else 's'} done"
        assert _text(browser, selector).strip() == expected
        browser.execute_script("window.__same_page = true;")
        WebDriverWait(browser, 20).until(lambda b, selector=selector: b.execute_script(  # the live refresh keeps it
            "return document.querySelector(arguments[0]).firstChild.nodeType === 1", selector))  # (it rewrites the cell)
        assert _text(browser, selector).strip() == expected and browser.execute_script("return window.__same_page === true")
    # The answer the vote read, marked in each sample's text.
    prompt_id = _rows(url, """SELECT p.id FROM prompts p JOIN iterations i ON i.id = p.iteration_id JOIN loops l ON l.id = i.loop_id
        JOIN samples s ON s.prompt_id = p.id JOIN judgments j ON j.sample_id = s.id
        WHERE l.name = 'tiny' AND j.kind = 'vote' AND j.answer IS NOT NULL ORDER BY p.id LIMIT 1""")[0][0]
    _open(browser, server + f"/prompts/{prompt_id}")
    samples = _rows(url, """SELECT s.sample_index, s.text, j.answer FROM samples s JOIN judgments j ON j.sample_id = s.id
        WHERE s.prompt_id = ? AND j.kind = 'vote' ORDER BY s.sample_index""", prompt_id)
    assert any(answer is not None for _, _, answer in samples)
    for index, body, answer in samples:
        article = browser.find_element(By.ID, f"sample-{index}")
        marks = article.find_elements(By.CSS_SELECTOR, "pre.text mark.answer")
        if answer is None:
            assert marks == []
            continue
        [mark] = marks
        assert normalise(mark.get_attribute("textContent")) == answer
        before = browser.execute_script(  # the mark sits where the last-number extractor read it: no number after it
            "const m = arguments[0]; let t = ''; for (let n = m.nextSibling; n; n = n.nextSibling) t += n.textContent; return t;", mark)
        assert extract_answer(before, ("last_number",)) is None, (body, before)  # 'The00' holds no number
        assert article.find_element(By.CSS_SELECTOR, "pre.text").get_attribute("textContent") == body
    _shoot(browser, shots / "prompt-marked.png")
    # Judge columns: the loop and iteration pages of a loop without an LLM judge have none.
    for name, judged in (("tiny", True), ("plain", False)):
        _open(browser, server + f"/loops/{name}")
        headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "table.iterations th")]
        assert ("mean judge score" in headers) == judged, headers
        _open(browser, server + f"/loops/{name}/iterations/1")
        headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "table.prompts th")]
        assert ("mean judge" in headers) == judged, headers
        assert _errors(browser) == []
        prompt = _rows(url, """SELECT p.id FROM prompts p JOIN iterations i ON i.id = p.iteration_id JOIN loops l
            ON l.id = i.loop_id WHERE l.name = ? ORDER BY p.id LIMIT 1""", name)[0][0]
        _open(browser, server + f"/prompts/{prompt}")
        headers = {h.text for h in browser.find_elements(By.CSS_SELECTOR, "table.judgments th")}
        assert "signal" in headers and ("judge's text" in headers) == judged, headers
    # The config, one click from the loop page.
    _open(browser, server + "/loops/tiny")
    browser.find_element(By.CSS_SELECTOR, 'a[href="/loops/tiny/config"]').click()
    WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith("/loops/tiny/config"))
    fields = dict((r.find_elements(By.TAG_NAME, "td")[0].text, r.find_elements(By.TAG_NAME, "td")[1].text)
                  for r in browser.find_elements(By.CSS_SELECTOR, "table.config tr") if r.find_elements(By.TAG_NAME, "td"))
    assert fields["train.algorithm"] == "rlsc" and float(fields["train.learning_rate"]) == 1e-3
    # What the loop rewarded: counts equal the store's, and an example prompt one click away.
    _open(browser, server + "/loops/tiny/iterations/1")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.rewards tbody tr")
    stored = _rows(url, """SELECT j.score > 0, s.correct, count(*) FROM judgments j JOIN samples s ON s.id = j.sample_id
        JOIN iterations i ON i.id = s.iteration_id JOIN loops l ON l.id = i.loop_id
        WHERE l.name = 'tiny' AND i.number = 1 AND j.kind = 'vote' GROUP BY 1, 2""")
    assert sum(int(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows) == sum(n for _, _, n in stored)
    link = rows[0].find_element(By.CSS_SELECTOR, "a[href^='/prompts/']")
    target = link.get_attribute("href")
    link.click()
    WebDriverWait(browser, 30).until(lambda b: b.current_url == target)
    _shoot(browser, shots / "rewarded.png")
    # The held-out items that flipped between the starting policy and the candidate.
    flipped = {o: {i for i, in _rows(url, f"""SELECT c.item_index FROM eval_items c JOIN eval_items b
        ON b.iteration_id = c.iteration_id AND b.suite = c.suite AND b.item_index = c.item_index AND b.role = 'baseline'
        JOIN iterations i ON i.id = c.iteration_id JOIN loops l ON l.id = i.loop_id
        WHERE l.name = 'tiny' AND i.number = 2 AND c.role = 'candidate' AND c.suite = 'arithmetic'
        AND c.correct = {1 if o == 'gained' else 0} AND b.correct = {0 if o == 'gained' else 1}""")} for o in ("gained", "lost")}
    for outcome, items in flipped.items():
        _open(browser, server + f"/loops/tiny/iterations/2/evals?suite=arithmetic&outcome={outcome}")
        shown = {int(r.find_element(By.TAG_NAME, "td").text) for r in browser.find_elements(By.CSS_SELECTOR, "table.eval-items tbody tr")}
        assert shown == items, (outcome, shown, items)
        assert _errors(browser) == []


def test_a_dropped_prompt_says_which_filter_dropped_it_and_why(store, server, browser, shots) -> None:
    """"Why was this prompt (not) trained on?": the iteration page counts each filter's decisions and marks the
    dropped prompts; one click on a dropped one shows the filter, its score and its reason, as stored."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = store
    _open(browser, server + "/loops/plain/iterations/1")
    steps = [[td.text for td in r.find_elements(By.TAG_NAME, "td")]
             for r in browser.find_elements(By.CSS_SELECTOR, "table.curation tbody tr")]
    stored = _rows(url, """SELECT c.filter, count(*), sum(CASE WHEN c.kept THEN 1 ELSE 0 END) FROM curations c
        JOIN iterations i ON i.id = c.iteration_id JOIN loops l ON l.id = i.loop_id
        WHERE l.name = 'plain' AND c.sample_id IS NULL GROUP BY c.position, c.filter ORDER BY c.position""")
    assert [(f, int(seen), int(kept)) for f, seen, kept, *_ in steps] == [(f, n, k) for f, n, k in stored]
    assert stored[-1] == ("budget", stored[-1][1], 3)
    dropped = [r for r in browser.find_elements(By.CSS_SELECTOR, "table.prompts tbody tr")
               if r.find_elements(By.CSS_SELECTOR, "td.dropped")]
    assert dropped, "no prompt is marked dropped"
    link = dropped[0].find_element(By.CSS_SELECTOR, "a[href^='/prompts/']")
    prompt_id = int(link.get_attribute("href").rsplit("/", 1)[1])
    link.click()
    WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith(f"/prompts/{prompt_id}"))
    assert "not trained on" in browser.find_element(By.XPATH, "//h2[starts-with(., 'Curation')]").text
    shown = [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in browser.find_elements(By.CSS_SELECTOR, "#curation tbody tr")]
    decisions = _rows(url, "SELECT filter, kept, reason FROM curations WHERE prompt_id = ? AND sample_id IS NULL "
                      "ORDER BY position", prompt_id)
    assert [(f, d, reason) for f, _, d, reason in shown] == [(f, "kept" if k else "dropped", r) for f, k, r in decisions]
    assert shown[-1][2] == "dropped" and shown[-1][3]
    assert _rows(url, "SELECT count(*) FROM examples WHERE prompt_id = ?", prompt_id) == [(0,)]
    _shoot(browser, shots / "curation.png")
    assert _errors(browser) == []


@pytest.fixture(scope="module")
def lab_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny lab on two seeds (control and RLSC, one iteration each): (the lab file, its store's URL)."""
    from tests.test_lab import _tiny_lab

    tmp = tmp_path_factory.mktemp("lab")
    lab = _tiny_lab(tmp)
    import yaml

    data = yaml.safe_load(lab.read_text())
    data["seeds"], data["arms"].pop("oracle"), data.pop("oracle")
    data["seeds"] = [0, 1]
    lab.write_text(yaml.safe_dump(data))
    out = selfloop_cli("lab", "run", "--allow-dirty", str(lab))
    assert out.returncode == 0, out.stderr[-3000:]
    return lab, f"sqlite:///{tmp / '.lab' / 't.db'}"


def _lab_charts(browser) -> list[dict]:
    return browser.execute_script("""
        return [...document.querySelectorAll('.chart')].map(el => ({id: el.id,
            height: el.getBoundingClientRect().height,
            title: (el.querySelector('.gtitle') || {}).textContent || '',
            xtitle: (el.querySelector('.xtitle') || {}).textContent || '',
            ytitle: (el.querySelector('.ytitle') || {}).textContent || '',
            traces: el.querySelectorAll('.trace').length}));""")


def test_the_lab_reads_at_a_glance_on_the_dashboard_and_in_its_report(lab_store, browser, shots) -> None:
    """The user trial: both lab charts were squashed to about 120 px, showed no title or axis label (string titles,
    which the bundled plotly.js ignores), the report printed its markdown in a <pre> and drew 60+ lines in one plot.
    At 1400 px: bars of each arm's gain per suite with intervals, each arm's mean curve with its spread per suite,
    titled, labelled and tall enough to read; the goals as a table."""
    lab, url = lab_store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "selfloop", "ui", "--db", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "selfloop ui: http://127.0.0.1:" in proc.stdout.readline()
        browser.set_window_size(1400, 1000)
        _open(browser, f"http://127.0.0.1:{port}/labs/t", charts=True)
        assert _errors(browser) == []
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 1400
        dashboard = _lab_charts(browser)
        _shoot(browser, shots / "lab-page.png")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        browser.set_window_size(1280, 1000)
    out = selfloop_cli("lab", "report", str(lab), "--out", str(lab.parent / "report"))
    assert out.returncode == 0, out.stderr[-2000:]
    browser.set_window_size(1400, 1000)
    try:
        _open(browser, (lab.parent / "report" / "index.html").as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.querySelectorAll('.chart svg.main-svg').length >= 3"))
        assert _errors(browser) == []
        report = _lab_charts(browser)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 1400
        goals = browser.execute_script("return [...document.querySelectorAll('#lab-goals tbody tr')].map(r => r.cells.length)")
        assert goals and set(goals) == {4} and "<pre>" not in browser.page_source and "**met**" not in browser.page_source
        _shoot(browser, shots / "lab-report.png")
    finally:
        browser.set_window_size(1280, 1000)
    for where, charts in (("dashboard", dashboard), ("report", report)):
        ids = [c["id"] for c in charts]
        assert any("lab-gains" in i for i in ids) and sum("lab-curve-" in i for i in ids) == 2, (where, ids)
        for chart in charts:
            assert chart["height"] >= 300 and chart["title"] and chart["ytitle"] and chart["xtitle"], (where, chart)
            assert chart["traces"] >= 1, (where, chart)
        curves = [c for c in charts if "lab-curve-" in c["id"]]
        assert all(c["traces"] <= 3 * 2 for c in curves), curves  # per arm: its mean and the band's two edges
