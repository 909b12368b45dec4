"""`selfloop lab`: the lab file is checked before anything runs; the comparison is the paired gain over the control
by hand; a tiny lab evaluates its common start once, writes one results line per arm x seed, and after kill -9 and
a re-run holds the rows and lines an uninterrupted lab holds."""

from __future__ import annotations

import json
import math
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from selfloop.errors import ConfigError, SelfloopError
from selfloop.lab.report import compare, markdown
from selfloop.lab.spec import read_lab
from tests.conftest import selfloop_cli, tiny_yaml


def _lab(tmp_path: Path, **fields) -> Path:
    data = {"name": "t", "config": "base.yaml", "seeds": [0], "arms": {"control": {}, "ttrl": {}}, **fields}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("fields", "message"), [
    ({"control": "none"}, r"control 'none' is not one of the arms \(control, ttrl\)"),
    ({"oracle": "ceiling"}, r"oracle 'ceiling' is not one of the arms"),
    ({"seeds": [1, 1]}, r"a seed is listed twice"),
    ({"spurious": "shuffled"}, r"spurious 'shuffled' is not one of the arms"),
    ({"ceilings": {"ttrl": "long"}}, r"ceilings 'long' is not one of the arms"),
    ({"ceilings": {"long": "ttrl"}}, r"ceilings 'long' is not one of the arms"),
    ({"label_free": ["ttrl", "vote"]}, r"label_free 'vote' is not one of the arms"),
    ({"name": "a b"}, r"name: .*letters"),
    ({"arms": {"x y": {}}}, r"arm 'x y'"),
    ({"colour": "red"}, r"colour: .*not permitted"),
])
def test_a_bad_lab_file_is_refused_in_one_line_naming_the_field(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        read_lab(_lab(tmp_path, **fields))
    assert "\n" not in str(err.value) and str(tmp_path / "lab.yaml") in str(err.value)


def test_a_missing_lab_file_is_named_as_a_lab_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^lab file not found: .*nope\.yaml$"):
        read_lab(tmp_path / "nope.yaml")


def _line(arm: str, seed: int, final: str, start: str = "0000", promoted: int = 1, split: str = "test") -> dict:
    return {"lab": "t", "arm": arm, "seed": seed, "promoted": promoted, "phase_seconds": {"train": 2.0},
            "signal": {"label_accuracy": 0.5}, "commit": "abc",
            "suites": {"s": {"split": split, "start": start, "final": final, "curve": [0.5]}}}


def test_the_comparison_is_the_paired_gain_over_the_control_by_hand() -> None:
    lines = [_line("control", 0, "1100", "1100", promoted=0), _line("ttrl", 0, "1110", "1100"),
             _line("oracle", 0, "1111", "1100")]
    result = compare(lines, "control", "oracle")
    cells = {c["arm"]: c for c in result["cells"]}
    # ttrl: d = (0, 0, 1, 0): mean 0.25, sd sqrt(0.25) = 0.5, half-width 1.96 * 0.5 / 2 = 0.49
    assert cells["ttrl"]["mean_gain"] == pytest.approx(0.25)
    assert cells["ttrl"]["gains"]["0"]["ci95"] == pytest.approx([0.25 - 0.49, 0.25 + 0.49], abs=1e-3)
    # oracle: d = (0, 0, 1, 1): mean 0.5; ttrl reaches half of it
    assert cells["oracle"]["mean_gain"] == pytest.approx(0.5) and cells["ttrl"]["fraction_of_oracle"] == pytest.approx(0.5)
    # an arm that lost half of what it started with while its gate promoted it: d = four -1 and four 0, mean -0.5,
    # sd sqrt(2/7), upper bound -0.5 + 1.96 sqrt(2/7) / sqrt(8) < 0: flagged; within the noise on 4 items it is not
    worse = compare([_line("control", 0, "11001100", "11001100", 0), _line("worse", 0, "00000000", "11001100")], "control", None)
    [cell] = [c for c in worse["cells"] if c["arm"] == "worse"]
    assert cell["gains"]["0"]["ci95"][1] == pytest.approx(-0.5 + 1.96 * math.sqrt(2 / 7) / math.sqrt(8), abs=1e-4)
    assert cell["promoted_but_worse_than_start"] == [0]
    small = compare([_line("control", 0, "1100", "1100", 0), _line("worse", 0, "0000", "1100")], "control", None)
    assert [c["promoted_but_worse_than_start"] for c in small["cells"] if c["arm"] == "worse"] == [[]]
    assert cells["ttrl"]["beyond_noise"] == 0 and result["reported"] == ["s"]
    table = markdown("t", result)
    assert "| ttrl | 1 | +25.0 (0.0) [0/1] pooled (-24.0, +74.0) | 0.50 |" in table and "control |" not in table
    # validation suites are compared too but not reported when a test split exists
    both = [{**l, "suites": {**l["suites"], "v": {**l["suites"]["s"], "split": "validation"}}} for l in lines]
    assert compare(both, "control", "oracle")["reported"] == ["s"]
    assert compare([_line("ttrl", 0, "1")], "control", None)["missing_control"]


def test_an_arm_on_another_budget_takes_its_fraction_against_its_own_ceiling() -> None:
    # control 0000; oracle and ttrl gain 1 item of 4 (0.25); the long ceiling gains all 4 (1.0)
    lines = [_line("control", 0, "0000", promoted=0), _line("oracle", 0, "1000"), _line("ttrl", 0, "1000"),
             _line("long", 0, "1000"), _line("oracle-long", 0, "1111")]
    result = compare(lines, "control", "oracle", label_free=["ttrl"], ceilings={"long": "oracle-long"})
    cells = {c["arm"]: c for c in result["cells"]}
    assert cells["ttrl"]["fraction_of_oracle"] == pytest.approx(1.0) and cells["ttrl"]["ceiling"] == "oracle"
    assert cells["long"]["fraction_of_oracle"] == pytest.approx(0.25) and cells["long"]["ceiling"] == "oracle-long"
    assert cells["oracle-long"]["fraction_of_oracle"] == pytest.approx(4.0)  # against `oracle`: it names no ceiling
    assert compare(lines, "control", "oracle", ceilings=None)["cells"] == [
        {**c, "fraction_of_oracle": 1.0 if c["arm"] == "long" else c["fraction_of_oracle"], "ceiling": "oracle"}
        for c in result["cells"]]


def test_the_cost_is_each_pieces_wall_time_summed_with_the_longest_and_the_phase_shares() -> None:
    # Three pieces: wall times 100 s, 250 s and (a line without run_seconds) its phases' 30 + 10 = 40 s: 390 s in
    # all, the longest ttrl/1. Phases over the three: evaluate 20 + 60 + 30 = 110, train 0 + 150 + 10 = 160,
    # rollout 70 + 0 + 0 = 70, of 340 s.
    lines = [{**_line("control", 0, "1", "1", 0), "run_seconds": 100.0, "phase_seconds": {"evaluate": 20.0, "rollout": 70.0}},
             {**_line("ttrl", 1, "1", "0"), "run_seconds": 250.0, "phase_seconds": {"evaluate": 60.0, "train": 150.0}},
             {**_line("ttrl", 2, "1", "0"), "phase_seconds": {"evaluate": 30.0, "train": 10.0}}]
    spent = compare(lines, "control", None)["cost"]
    assert spent["pieces"] == 3 and spent["machine_seconds"] == pytest.approx(390.0)
    assert spent["longest"] == {"arm": "ttrl", "seed": 1, "seconds": 250.0}
    assert list(spent["phases"]) == ["train", "evaluate", "rollout"]  # the dearest first
    assert spent["phases"]["train"]["share"] == pytest.approx(160 / 340)
    assert spent["phases"]["rollout"]["seconds"] == pytest.approx(70.0)
    assert "Cost: 3 pieces, 390 s of machine time (0.1 h; the longest, ttrl/1, 250 s); train 47 %, evaluate 32 %, " \
           "rollout 21 %" in markdown("t", compare(lines, "control", None))
    assert compare([], "control", None)["cost"] == {"pieces": 0, "machine_seconds": 0.0, "longest": None, "phases": {}}
    # what each arm's signal costs per iteration: rollout 70 s over the control's 2 iterations, 35 + 0; ttrl neither
    signals = [{**lines[0], "iterations": 2}, {**lines[1], "iterations": 3, "phase_seconds": {"rollout": 90.0, "judge": 3.0}},
               {**lines[2], "iterations": 3, "phase_seconds": {"rollout": 60.0, "judge": 6.0, "train": 10.0}}]
    assert compare(signals, "control", None)["signal_cost"] == {"control": {"rollout": 35.0, "judge": 0.0},
                                                                "ttrl": {"rollout": 25.0, "judge": 1.5}}
    assert "rollout + judge (what each arm's signal costs), mean over its pieces: control 35 + 0, ttrl 25 + 2" \
        in markdown("t", compare(signals, "control", None))


def _two(arm: str, seed: int, val: str, test: str) -> dict:
    """A results line on a validation suite and a test suite, both in unseen wordings, of 8 items, started from all
    wrong."""
    return {"lab": "t", "arm": arm, "seed": seed, "promoted": 1, "phase_seconds": {"train": 1.0}, "signal": {},
            "suites": {"val-unseen": {"split": "validation", "phrasing": "unseen", "start": "0" * 8, "final": val, "curve": []},
                       "test-unseen": {"split": "test", "phrasing": "unseen", "start": "0" * 8, "final": test, "curve": []}}}


def test_pooled_intervals_and_the_goals_by_hand() -> None:
    # Pooled over seeds, by item: ttrl's per-item gains over seeds 0-2 on 4 items average to (1, 2/3, 1/3, 0): mean
    # 0.5, sample variance 5/27, half-width 1.96 * sqrt(5/27 / 4).
    lines = [_line("control", s, "0000", "0000", 0) for s in range(3)] + \
            [_line("ttrl", s, final) for s, final in enumerate(("1100", "1000", "1110"))]
    [cell] = [c for c in compare(lines, "control", None)["cells"] if c["arm"] == "ttrl"]
    half = 1.96 * math.sqrt(5 / 27 / 4)
    assert cell["pooled"]["gain"] == pytest.approx(0.5) and cell["pooled"]["ci95"] == pytest.approx([0.5 - half, 0.5 + half], abs=1e-3)
    # The goals, marked on validation, three seeds of 8 items each, the same on every seed. The oracle gains 6 of 8
    # (per seed: 0.75, low 0.75 - 1.96 * sqrt(3/14 / 8) = 0.43 > 0); ttrl 5 of 8; stated 2; shuffled none.
    # ttrl - shuffled: items (1,1,1,1,1,0,0,0): mean 0.625, se sqrt((5 * 0.375^2 + 3 * 0.625^2) / 7 / 8) = 0.183,
    # z 3.42, p 0.0006; stated - shuffled: mean 0.25, se sqrt(3/14 / 8) = 0.164, z 1.53, p 0.127; Holm over the two:
    # 0.0013 and 0.127: the demo's arm (ttrl) beyond the noise. ttrl / oracle: 5/6 = 0.83. On test the order differs
    # (stated first): never used.
    arms = {"control": ("0" * 8, "0" * 8), "oracle": ("11111100", "11111100"), "ttrl": ("11111000", "10000000"),
            "stated": ("11000000", "11110000"), "shuffled": ("00000000", "00000000")}
    lines = [_two(arm, s, *finals) for s in range(3) for arm, finals in arms.items()]
    roles = {"spurious": "shuffled", "label_free": ["ttrl", "stated"], "demo": "ttrl"}
    result = compare(lines, "control", "oracle", **roles)
    assert result["chosen_on"] == ["val-unseen"] and result["reported"] == ["test-unseen"]
    goals = {g["goal"].split(":")[0].split(" (")[0]: g for g in result["goals"]}
    assert [g["met"] for g in goals.values()] == [True, True, True, True, True], goals
    assert all(g["split"] == "validation" for g in goals.values())
    reward = goals["the gain is the reward's"]["why"]
    assert "ttrl - shuffled on val-unseen: +62.5 (" in reward and "Holm-adjusted p 0.001" in reward
    assert "stated - shuffled on val-unseen: +25.0 (" in reward and "Holm-adjusted p 0.127" in reward
    assert "ttrl on val-unseen: 0.83 (" in goals["a label-free arm reaches half the oracle's gain"]["why"]
    demo = goals["the demo is the best label-free arm"]
    assert "on val-unseen: ttrl +62.5 > stated +25.0" in demo["why"] and "on test-unseen: stated +50.0 > ttrl +12.5" in demo["test"]
    # A shuffled arm as good as the arm: the gain is not the reward's; stated as the demo is beaten by ttrl
    # (ttrl - stated: items (0,0,1,1,1,0,0,0): +37.5, se 0.183, p 0.040, one comparison: beyond the noise).
    arms["shuffled"] = arms["ttrl"]
    lines = [_two(arm, s, *finals) for s in range(3) for arm, finals in arms.items()]
    goals = compare(lines, "control", "oracle", **{**roles, "demo": "stated"})["goals"]
    assert goals[0]["met"] is False and "ttrl - shuffled on val-unseen: +0.0 (+0.0, +0.0)" in goals[0]["why"]
    assert goals[4]["met"] is False and "beaten beyond the noise by ttrl" in goals[4]["why"]
    # On two seeds nothing is claimed; an arm on one seed is not ranked.
    two = compare([l for l in lines if l["seed"] < 2], "control", "oracle", **roles)["goals"]
    assert [g["met"] for g in two[:3]] == [None, None, None]
    assert two[4]["met"] is None and "not on 3 seeds yet" in two[4]["why"]
    lucky = compare(lines + [_two("rrhf", 0, "11111111", "11111111")], "control", "oracle",
                    **{**roles, "label_free": ["ttrl", "stated", "rrhf"]})["goals"][4]
    assert lucky["met"] is True and "fewer than 3 seeds): rrhf" in lucky["why"]
    # An arm that ties the demo on every item is not better than it.
    tie = compare(lines + [_two("ttrl-twin", s, *arms["ttrl"]) for s in range(3)], "control", "oracle",
                  **{**roles, "label_free": ["ttrl", "stated", "ttrl-twin"]})["goals"][4]
    assert tie["met"] is True, tie
    assert "needs the spurious-reward arm" in compare(lines, "control", "oracle")["goals"][0]["why"]
    # Without a validation suite no goal is marked: test is never read to decide.
    tested = [{**l, "suites": {"test-unseen": l["suites"]["test-unseen"]}} for l in lines]
    assert {g["met"] for g in compare(tested, "control", "oracle", **roles)["goals"]} == {None}
    table = markdown("t", compare(lines, "control", "oracle", **roles))
    assert "Goals, marked on the validation split (val-unseen)" in table
    assert "- the gain is the reward's: the label-free arm beats the shuffled control, paired: **NOT met**" in table


def test_gate_replay_retakes_each_decision_under_every_rule_by_hand() -> None:
    from selfloop.lab import gates

    d = gates.Decision
    found = [  # (val difference, its interval) decides; test is read
        d("a", 1, True, {"val": (0.05, 0.01, 0.09), "test": (0.04, 0.01, 0.07)}),     # a real gain: every rule promotes
        d("a", 2, True, {"val": (-0.01, -0.06, 0.04), "test": (-0.06, -0.10, -0.02)}),  # within tolerance, lost beyond noise
        d("a", 3, True, {"val": (0.0, -0.03, 0.03), "test": (-0.01, -0.05, 0.03)}),   # a tie
        d("b", 1, False, {"val": (-0.03, -0.08, 0.02), "test": (0.05, 0.02, 0.08)}),  # rejected, gained beyond noise
        d("b", 2, True, {"val": (0.01, -0.02, 0.04)}),                                # no test rows: left out
    ]
    got = gates.replay(found, "val", ["test"])
    assert got["tolerance 0.02"] == {"decisions": 4, "promoted": 3, "test": {
        "promoted_lost": 2, "promoted_lost_beyond_noise": 1, "rejected_gained_beyond_noise": 1, "promoted_points": -3.0}}
    assert got["tolerance 0"]["promoted"] == 2 and got["tolerance 0"]["test"]["promoted_points"] == 3.0
    assert got["tolerance 0"]["test"]["promoted_lost_beyond_noise"] == 0
    assert got["gain >= 0.02"]["promoted"] == 1 and got["95% interval above 0"]["promoted"] == 1
    assert got["95% interval above 0"]["test"]["rejected_gained_beyond_noise"] == 1


def test_the_label_free_gate_is_retaken_on_self_consistency_and_set_against_the_labelled_one_by_hand() -> None:
    from selfloop.lab import gates

    d = gates.Decision
    found = [  # the labelled decision as the loop ran; val's self-consistency difference decides the label-free one
        d("t.a.s0", 1, True, {}, {"val": (0.04, 0.0, 0.08)}),      # both promote
        d("t.a.s0", 2, True, {}, {"val": (-0.05, -0.1, 0.0)}),     # below -0.02: labelled only
        d("t.a.s0", 3, False, {}, {"val": (-0.02, -0.06, 0.02)}),  # at -0.02, within the tolerance: label-free only
        d("t.b.s0", 1, False, {}, {"val": (-0.01, -0.04, 0.02)}),  # tolerance 0 for arm b: both reject
        d("t.b.s0", 2, True, {}, {}),                              # no self-consistency: left out
    ]
    got = gates.label_free_agreement(found, "val", lambda loop: 0.0 if ".b." in loop else 0.02)
    assert got == {"suite": "val", "decisions": 4, "both promote": 1, "labelled only": 1, "label-free only": 1,
                   "both reject": 1, "agreement": 0.5}
    assert gates.label_free_agreement(found, "test", lambda loop: 0.02) is None
    assert "agrees on 50% | both promote 1, labelled only 1, label-free only 1, both reject 1" in gates.render_agreement(got)
    assert "majority_k" in gates.render_agreement(None)


def test_lab_gates_before_any_run_says_to_run_the_lab_first(tmp_path: Path) -> None:
    from selfloop.lab.run import Lab

    tiny_yaml(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", name="base.yaml")
    with pytest.raises(SelfloopError, match=r"lab t: no store at sqlite:///.*t\.db yet; `selfloop lab run .*lab\.yaml` first"):
        Lab(_lab(tmp_path)).gate_decisions()


# -- a tiny lab ---------------------------------------------------------------------------------------------------
SUITES = [{"name": "val", "kind": "arithmetic", "size": 6, "max_new_tokens": 8, "split": "validation", "majority_k": 2},
          {"name": "test", "kind": "arithmetic", "size": 6, "max_new_tokens": 8, "split": "test"},
          {"name": "test-unseen", "kind": "arithmetic", "size": 6, "max_new_tokens": 8, "split": "test", "phrasing": "unseen"}]


def _tiny_lab(tmp_path: Path) -> Path:
    base = tiny_yaml(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", name="base.yaml", self_instruct__num_prompts=0,
                     loop__phases=["rollout", "judge", "select", "train", "evaluate", "promote"],
                     eval__suites=SUITES, eval__main_metric="val/greedy_accuracy")
    data = yaml.safe_load(base.read_text())
    data["database"] = {}  # the lab names the store
    base.write_text(yaml.safe_dump(data))
    return _lab(tmp_path, seeds=[0], budget={"loop.max_iterations": 1}, oracle="oracle", label_free=["rlsc"], demo="rlsc",
                arms={"control": {"loop.phases": ["evaluate", "promote"]}, "rlsc": {},
                      "oracle": {"train.algorithm": "rest", "train.rest.reward": "ground_truth"}})


def _lines(path: Path) -> list[dict]:
    drop = {"date", "run_seconds", "phase_seconds", "machine", "created_at", "commit", "diff_sha256", "store"}
    return sorted(({k: v for k, v in json.loads(t).items() if k not in drop} for t in path.read_text().splitlines()),
                  key=lambda l: (l["arm"], l["seed"]))


@pytest.mark.integration
def test_a_tiny_lab_runs_shares_its_start_and_resumes_after_kill_9(tmp_path: Path) -> None:
    from tests.faults.test_faults import _same, _snapshot

    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean_dir.mkdir(), killed_dir.mkdir()
    clean = _tiny_lab(clean_dir)
    out = selfloop_cli("lab", "run", "--allow-dirty", str(clean))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 arm x seed piece(s) finished" in out.stdout
    # the common start is answered once per greedy suite (by the control, run first); the other arms copy its rows.
    # val also samples k answers (majority_k, for the label-free gate), which each loop draws under its own seed.
    for suite in ("test", "test-unseen"):
        assert out.stderr.count(f"evaluate baseline on {suite}:") == 1, out.stderr[-3000:]
    lines = _lines(clean_dir / "results" / "t.jsonl")
    assert [(l["arm"], l["seed"], l["iterations"]) for l in lines] == [("control", 0, 1), ("oracle", 0, 1), ("rlsc", 0, 1)]
    assert {l["suites"]["test"]["start"] for l in lines} == {lines[0]["suites"]["test"]["start"]}
    assert all(l["suites"]["test-unseen"]["split"] == "test" and l["suites"]["val"]["split"] == "validation" for l in lines)
    # each iteration's label-free monitors as the collapse guard reads them from the store: a guard replays from a line
    from selfloop.db.engine import open_database as _open
    from selfloop.db.queries import loop_by_name, monitor_history

    store = _open(f"sqlite:///{clean_dir / '.lab' / 't.db'}")
    with store.session() as session:
        for line in lines:
            loop = loop_by_name(session, f"t.{line['arm']}.s0")
            assert line["monitors"] == [{"iteration": n, **m} for n, m in monitor_history(session, loop.id, 1)]
    store.dispose()
    rlsc = next(l for l in lines if l["arm"] == "rlsc")
    assert [m["iteration"] for m in rlsc["monitors"]] == [1] and "drift.answer_entropy" in rlsc["monitors"][0]
    # What reproduces a line: its resolved config (a hash, and the snapshot beside the results), the versions, the CPU
    # and the model's weights.
    import hashlib

    from selfloop.lab.provenance import cpu_model

    for line in lines:
        snapshot = clean_dir / "results" / "configs" / f"{line['config_sha256']}.json"
        assert hashlib.sha256(snapshot.read_text().rstrip("\n").encode()).hexdigest() == line["config_sha256"]
        assert json.loads(snapshot.read_text())["loop"]["name"] == f"t.{line['arm']}.s0"
        assert set(line["versions"]) == {"selfloop", "torch", "transformers", "peft", "python"}
        assert line["cpu"] == cpu_model() and len(line["model_sha256"]) == 64
    assert len({l["model_sha256"] for l in lines}) == 1 and len({l["config_sha256"] for l in lines}) == 3
    report = selfloop_cli("lab", "report", str(clean), "--out", str(clean_dir / "report"), "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    result = json.loads(report.stdout)
    assert result["reported"] == ["test", "test-unseen"] and {c["arm"] for c in result["cells"]} == {"control", "rlsc", "oracle"}
    # the cost is each piece's wall time from its results line, summed
    walls = [json.loads(t)["run_seconds"] for t in (clean_dir / "results" / "t.jsonl").read_text().splitlines()]
    assert result["cost"]["pieces"] == 3 and result["cost"]["machine_seconds"] == pytest.approx(sum(walls), abs=0.2)
    assert result["cost"]["longest"]["seconds"] == pytest.approx(max(walls))
    # the gains, then one chart of the arms' curves per reported suite
    assert (clean_dir / "report" / "index.html").read_text().count("Plotly.newPlot") == 1 + len(result["reported"])
    assert (clean_dir / "report" / "plotly.min.js").stat().st_size > 100_000
    # the dashboard's lab page computes the same comparison from the store
    from starlette.testclient import TestClient

    from selfloop.ui.app import create_app

    client = TestClient(create_app(f"sqlite:///{clean_dir / '.lab' / 't.db'}"), base_url="http://127.0.0.1")
    assert 'href="/labs/t"' in client.get("/").text
    page = client.get("/labs/t")
    assert page.status_code == 200 and "3 of 3 arm x seed loops finished" in page.text
    for c in result["cells"]:
        if c["reported"] and c["arm"] != "control":
            assert f'data-arm="{c["arm"]}" data-suite="{c["suite"]}"' in page.text
            assert f'{100 * c["mean_gain"]:+.1f}' in page.text
    assert page.text.count("<tr data-met=") == 5
    assert "<td>the demo is the best label-free arm (no arm beats it beyond the noise)</td><td><b" in page.text
    assert 'id="lab-cost">Cost: 3 finished pieces' in page.text
    assert [g["met"] for g in result["goals"]][1] is None  # one seed: the oracle's claim needs three
    assert client.get("/labs/nope").status_code == 404
    # `lab gates` re-takes each stored decision from the same rows; at the gate's own tolerance it agrees with the gate
    from selfloop.db.engine import open_database
    from selfloop.db.queries import metrics_of
    from selfloop.lab.run import Lab

    gate, reported, found = Lab(clean).gate_decisions()
    assert (gate, reported) == ("val", ["test", "test-unseen"])
    db = open_database(f"sqlite:///{clean_dir / '.lab' / 't.db'}")
    with db.session() as session:  # every gated iteration that trained a candidate (the control trains none)
        trained = session.execute(text("SELECT l.name, i.number FROM iterations i JOIN loops l ON l.id = i.loop_id "
                                       "WHERE i.output_checkpoint_id IS NOT NULL AND i.promoted IS NOT NULL")).all()
        assert sorted((d.loop, d.iteration) for d in found) == sorted(map(tuple, trained)) and ("t.rlsc.s0", 1) in trained
        for decision in found:
            it_id = session.execute(text("SELECT i.id FROM iterations i JOIN loops l ON l.id = i.loop_id WHERE l.name = :n"),
                                    {"n": decision.loop}).scalar_one()
            assert math.isclose(metrics_of(session, it_id, "promote.")["promote.delta"], decision.diffs["val"][0])
    db.dispose()
    gates = selfloop_cli("lab", "gates", str(clean), "--json")
    assert gates.returncode == 0, gates.stderr[-2000:]
    rules = json.loads(gates.stdout)["rules"]
    assert rules["tolerance 0.02"]["promoted"] == sum(d.promoted for d in found) and rules["tolerance 0"]["decisions"] == len(found)
    # the label-free gate re-taken on val's self-consistency (majority_k 2) against the labelled gate's decisions
    free = json.loads(gates.stdout)["label_free"]
    assert free["suite"] == "val" and free["decisions"] == len(found)
    assert free["both promote"] + free["labelled only"] == sum(d.promoted for d in found)
    assert free["agreement"] == (free["both promote"] + free["both reject"]) / len(found)
    assert all(set(d.consistency) == {"val"} for d in found)  # only the sampled suite has self-consistency
    assert "The label-free gate (self-consistency on val" in selfloop_cli("lab", "gates", str(clean)).stdout
    status = selfloop_cli("lab", "status", str(clean))
    assert status.stdout.count("finished, 1 iteration(s) done") == 3
    again = selfloop_cli("lab", "run", "--allow-dirty", str(clean))  # nothing left to run, no line added
    assert again.returncode == 0 and len((clean_dir / "results" / "t.jsonl").read_text().splitlines()) == 3

    # killed in the second arm's training, then run again: the same rows and lines
    lab = _tiny_lab(killed_dir)
    killed = selfloop_cli("lab", "run", "--allow-dirty", str(lab), env={"SELFLOOP_FAILPOINT": "train.after_step:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert len((killed_dir / "results" / "t.jsonl").read_text().splitlines()) == 1  # the control finished
    resumed = selfloop_cli("lab", "run", "--allow-dirty", str(lab))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _lines(killed_dir / "results" / "t.jsonl") == lines
    got, want = _snapshot(f"sqlite:///{killed_dir / '.lab' / 't.db'}", killed_dir / "state"), \
        _snapshot(f"sqlite:///{clean_dir / '.lab' / 't.db'}", clean_dir / "state")
    assert got["weights"] == want["weights"]
    for table, rows in want["tables"].items():
        if table != "phase_runs":  # the killed phase ran twice: its attempts differ
            assert _same(got["tables"][table], rows), f"table {table} differs from an uninterrupted lab"

    # a lab that starts from a stored checkpoint: every arm is a fork of it, in the same store
    fork_lab = _lab(clean_dir, name="f", seeds=[0], database=f"sqlite:///{clean_dir / '.lab' / 't.db'}",
                    start={"loop": "t.rlsc.s0", "at": 1}, budget={"loop.max_iterations": 1},
                    arms={"control": {"loop.phases": ["evaluate", "promote"]}, "rlsc": {}})
    forked = selfloop_cli("lab", "run", "--allow-dirty", str(fork_lab))
    assert forked.returncode == 0, forked.stderr[-3000:]
    from sqlalchemy import create_engine

    with create_engine(f"sqlite:///{clean_dir / '.lab' / 't.db'}").connect() as conn:
        starts = conn.execute(text(
            "SELECT l.name, p.name, l.start_checkpoint_id = i.output_checkpoint_id FROM loops l JOIN loops p ON "
            "p.id = l.parent_loop_id JOIN iterations i ON i.loop_id = p.id AND i.number = 1 WHERE l.name LIKE 'f.%' "
            "ORDER BY l.name")).all()
    assert starts == [("f.control.s0", "t.rlsc.s0", 1), ("f.rlsc.s0", "t.rlsc.s0", 1)]


def test_only_names_arms_and_seeds_of_the_lab(tmp_path: Path) -> None:
    from selfloop.lab.run import Lab

    lab = Lab(_lab(tmp_path, seeds=[0, 1], arms={"control": {}, "ttrl": {}, "x": {}}))
    assert [str(p) for p in lab.pieces()] == ["control/0", "ttrl/0", "x/0", "control/1", "ttrl/1", "x/1"]
    # in the order given (a queue written by hand runs as written), each piece once
    assert [str(p) for p in lab.pieces(["x", "ttrl/1", "x/1"])] == ["x/0", "x/1", "ttrl/1"]
    assert [str(p) for p in lab.pieces(["ttrl/1", "control/0"])] == ["ttrl/1", "control/0"]
    with pytest.raises(SelfloopError, match="no arm 'y'"):
        lab.pieces(["y"])
    with pytest.raises(SelfloopError, match="seed '2' is not one of"):
        lab.pieces(["x/2"])


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "labs").glob("*.yaml")))
def test_the_checked_in_labs_validate_every_arm(path: Path) -> None:
    from selfloop.lab.run import Lab

    lab = Lab(path)
    lab.check()  # every arm x seed's config, and the same suites for all
    assert lab.spec.control in lab.spec.arms and lab.spec.oracle in lab.spec.arms
    config = lab.config(lab.pieces()[0])
    assert any(s.split == "test" for s in config.eval.suites)
    assert next(s for s in config.eval.suites if s.name == config.eval.main_metric.split("/")[0]).split == "validation"


@pytest.mark.parametrize(("lab_file", "demo_file"), [("arithmetic.yaml", "demo-cpu.yaml"),
                                                     ("instructions.yaml", "demo-selfreward.yaml")])
def test_a_demo_runs_the_arm_its_lab_chose(lab_file: str, demo_file: str) -> None:
    """The lab file's `demo` names the arm the goals hold to be the best label-free one: the demo's config must train
    as that arm does (the lab's budget replaces the evaluation suites, and a piece has its own name, seed and store)."""
    from selfloop.config import load_config
    from selfloop.lab.run import Lab

    repo = Path(__file__).parent.parent
    lab = Lab(repo / "labs" / lab_file)
    assert lab.spec.demo in lab.spec.arms and lab.spec.demo in (lab.spec.label_free or [])
    arm = lab.arm_config(lab.spec.demo).model_dump(mode="json")
    demo = load_config(repo / "configs" / demo_file).model_dump(mode="json")
    for section in ("model", "engine", "generation", "judge", "curate", "train"):
        assert demo[section] == arm[section], f"{demo_file}'s {section} is not the {lab.spec.demo} arm's of {lab_file}"
    for key in ("phases", "max_iterations"):
        assert demo["loop"][key] == arm["loop"][key], f"{demo_file}'s loop.{key} is not the {lab.spec.demo} arm's"


@pytest.mark.integration  # runs git
def test_a_results_line_names_its_commit_dirty_only_for_changes_besides_what_the_lab_writes(tmp_path: Path) -> None:
    """The lab appends to its results file, which is checked in: that alone must not mark the next piece's
    commit '+dirty' (it did, for every piece after a checkout's first); a change anywhere else must."""
    from selfloop.lab.run import _commit

    repo, results = tmp_path / "repo", tmp_path / "repo" / "labs" / "results" / "lab.jsonl"
    (repo / "pkg").mkdir(parents=True)
    results.parent.mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    results.write_text('{"arm": "control"}\n')
    archived = results.parent / "stores" / "lab.db.gz"
    archived.parent.mkdir()
    archived.write_bytes(b"a store")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    sha = git("rev-parse", "HEAD")
    with results.open("a") as f:
        f.write('{"arm": "x"}\n')
    assert _commit(ignore=[results], here=repo / "pkg") == sha
    assert _commit(here=repo / "pkg") == sha + "+dirty"  # the same file, not the lab's own: a change
    assert _commit(ignore=[tmp_path / "elsewhere.jsonl"], here=repo / "pkg") == sha + "+dirty"
    # The archived store is checked in beside the lines and replaced after every piece: the lab's own data too
    archived.write_bytes(b"another store")
    assert _commit(ignore=[results], here=repo / "pkg") == sha + "+dirty"
    assert _commit(ignore=[results, archived], here=repo / "pkg") == sha
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    assert _commit(ignore=[results, archived], here=repo / "pkg") == sha + "+dirty"


def test_a_relative_sqlite_database_is_the_lab_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It resolved against the working directory, so the same lab file found another store from elsewhere."""
    from selfloop.lab.run import Lab

    (tmp_path / "labs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = _lab(tmp_path / "labs", database="sqlite:///stores/t.db")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Lab(path).url == f"sqlite:///{tmp_path / 'labs' / 'stores' / 't.db'}"
    assert Lab(_lab(tmp_path / "labs", database="sqlite:////abs/t.db")).url == "sqlite:////abs/t.db"


def test_a_bad_only_is_refused_before_any_config_is_read_and_arms_are_checked_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10,000-piece lab validated every piece's config before rejecting a bad --only, and each --jobs worker
    validated them all again. --only is checked first; the check reads one config per arm; a worker skips it."""
    from selfloop.lab.run import Lab

    arms = {"control": {}, **{f"a{i}": {} for i in range(99)}}
    lab = Lab(_lab(tmp_path, seeds=list(range(100)), arms=arms))
    read = []
    monkeypatch.setattr(Lab, "config", lambda self, piece: read.append(piece) or pytest.fail("a config was read"))
    with pytest.raises(SelfloopError, match="no arm 'nope'"):
        lab.run(["nope"])
    assert read == []
    checked = []
    monkeypatch.setattr(Lab, "check", lambda self: checked.append(True))
    monkeypatch.setattr(Lab, "run_piece", lambda self, piece, stop: False)
    lab.run(["a1/3"], checked=True)
    assert checked == []  # a worker of a --jobs run: its parent checked the lab file


def test_the_check_reads_one_config_per_arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selfloop.lab.run import Lab

    class Suites:
        eval = type("E", (), {"suites": []})()

    lab = Lab(_lab(tmp_path, seeds=[0, 1, 2, 3]))
    read = []
    monkeypatch.setattr(Lab, "config", lambda self, piece: read.append(str(piece)) or Suites())
    lab.check()
    assert read == ["control/0", "ttrl/0"]


@pytest.mark.integration  # the dirty check runs git
def test_a_missing_start_loop_is_refused_before_the_store_is_made(tmp_path: Path) -> None:
    from selfloop.lab.run import Lab

    lab = Lab(_lab(tmp_path, start={"loop": "base", "at": 1}))
    lab.check = lambda: None  # the base config is not what is tested
    with pytest.raises(SelfloopError, match=r"start.loop 'base': the lab's store .* does not exist yet"):
        lab.run(allow_dirty=True)
    assert not (tmp_path / ".lab").exists(), "nothing may be created before the start is known to exist"


def test_the_choosing_guides_lab_file_is_a_valid_lab(tmp_path: Path) -> None:
    """docs/choosing.md shows a lab file for a user's own task: it must be one `selfloop lab` reads."""
    import re

    text = (Path(__file__).parent.parent / "docs" / "choosing.md").read_text()
    block = re.search(r"```yaml\n(# labs/mine.yaml\n.*?)```", text, flags=re.S).group(1)
    (tmp_path / "mine.yaml").write_text(block)
    lab, _ = read_lab(tmp_path / "mine.yaml")
    assert lab.control == "control" and lab.oracle == "oracle" and lab.spurious == "shuffled"
    assert set(lab.label_free) <= set(lab.arms)


def test_holm_by_hand() -> None:
    """p = 0.01, 0.03, 0.04 over three arms: sorted, times 3, 2, 1 = 0.03, 0.06, 0.04, made monotone: 0.03, 0.06,
    0.06."""
    from selfloop.evals.stats import holm

    assert holm({"a": 0.04, "b": 0.01, "c": 0.03}) == pytest.approx({"b": 0.03, "c": 0.06, "a": 0.06})
    assert holm({"only": 0.02}) == {"only": 0.02} and holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_the_bootstrap_ratio_by_hand() -> None:
    """One seed, two items: the arm's gains 1, 0 over the control's, the oracle's 1, 1. Resampling two items from
    two: {a, a} (ratio 1), {a, b} or {b, a} (0.5), {b, b} (0), probabilities 1/4, 1/2, 1/4: the point ratio is 0.5
    and the 95 % interval runs from 0 to 1. An oracle twice the arm on every item: 0.5 in every draw."""
    from selfloop.evals.stats import bootstrap_ratio

    ratio, low, high, undefined = bootstrap_ratio({0: [1.0, 0.0]}, {0: [1.0, 1.0]}, draws=4000)
    assert (ratio, low, high, undefined) == (0.5, 0.0, 1.0, 0.0)
    ratio, low, high, _ = bootstrap_ratio({0: [1.0, 1.0, 0.0], 1: [1.0, 0.0, 0.0]}, {0: [2.0, 2.0, 0.0], 1: [2.0, 0.0, 0.0]})
    assert ratio == low == high == 0.5
    # an oracle that gains nothing on some draws: those draws have no ratio, and their share says so
    *_, undefined = bootstrap_ratio({0: [1.0, 0.0]}, {0: [1.0, -1.0]}, draws=4000)
    assert undefined == pytest.approx(0.75, abs=0.03)  # {a,b}, {b,a} (mean 0) and {b,b} (-1): 3 of 4


def test_a_two_sided_p_by_hand() -> None:
    from selfloop.evals.stats import two_sided_p

    assert two_sided_p(1.959964, 1.0) == pytest.approx(0.05, abs=1e-6)
    assert two_sided_p(0.0, 1.0) == 1.0 and two_sided_p(0.3, 0.0) == 0.0


def test_a_lab_refuses_a_dirty_tree_unless_told(tmp_path: Path) -> None:
    """27 of 72 lines carried '+dirty', which nobody could reproduce from their commit: a lab refuses to run from a
    tree with uncommitted changes unless --allow-dirty, and then the line records the diff's sha256."""
    from selfloop.lab.provenance import refuse_dirty

    with pytest.raises(SelfloopError, match=r"lab t: the source has uncommitted changes \(abc\+dirty\).*--allow-dirty"):
        refuse_dirty("abc+dirty", False, "t")
    refuse_dirty("abc+dirty", True, "t")
    refuse_dirty("abc", False, "t")


def test_the_provenance_of_a_line_by_hand(tmp_path: Path) -> None:
    """The model's hash is over each weights file's own sha256, in name order; the config's hash is over the part
    that decides what a loop computes (not the store, not the state directory: the same piece elsewhere has it)."""
    import hashlib

    from selfloop.lab.provenance import config_snapshot
    from selfloop.models.resolve import weights_sha256
    from tests.conftest import make_config

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "b.safetensors").write_bytes(b"bbb")
    (tmp_path / "m" / "a.safetensors").write_bytes(b"aa")
    (tmp_path / "m" / "config.json").write_text("{}")
    files = "".join(f"{n} {hashlib.sha256(b).hexdigest()}\n" for n, b in (("a.safetensors", b"aa"), ("b.safetensors", b"bbb")))
    assert weights_sha256(str(tmp_path / "m")) == hashlib.sha256(files.encode()).hexdigest()
    one = config_snapshot(make_config(tmp_path, f"sqlite:///{tmp_path / 'one.db'}"))
    other = config_snapshot(make_config(tmp_path / "elsewhere", f"sqlite:///{tmp_path / 'other.db'}"))
    changed = config_snapshot(make_config(tmp_path, f"sqlite:///{tmp_path / 'one.db'}", train={"learning_rate": 0.5}))
    assert one == other and one[0] != changed[0] and "learning_rate" in one[1]


@pytest.mark.integration
def test_a_piece_can_archive_the_store_beside_its_results(tmp_path: Path) -> None:
    """The lab stores were not kept: nobody could check the collapse table, the promotions or the gate replays."""
    import gzip
    import sqlite3

    lab = _tiny_lab(tmp_path)
    out = selfloop_cli("lab", "run", "--allow-dirty", "--archive", "--only", "control", str(lab))
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = [json.loads(t) for t in (tmp_path / "results" / "t.jsonl").read_text().splitlines()]
    archived = tmp_path / "results" / line["store"]
    assert line["store"] == "stores/t.db.gz" and archived.is_file()
    (tmp_path / "copy.db").write_bytes(gzip.decompress(archived.read_bytes()))
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        assert conn.execute("SELECT name FROM loops").fetchall() == [("t.control.s0",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.integration  # the dirty check runs git
def test_a_piece_that_fails_stops_only_itself_and_the_run_ends_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          run_cli) -> None:
    # One arm's config error at run time (as a curate filter that keeps no prompt raises) must not end a lab of many
    # hours: the other pieces run, and the run exits 1 naming the failed piece and why. run_piece stands in for the
    # loops here: this checks the runner's order of work, not a loop.
    from selfloop.lab.run import Lab

    tiny_yaml(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", name="base.yaml")
    lab = _lab(tmp_path, seeds=[0, 1], arms={"control": {}, "band": {}, "ttrl": {}})
    ran: list[str] = []

    def run_piece(self: Lab, piece, stop) -> bool:
        ran.append(str(piece))
        if piece.arm == "band":
            raise SelfloopError("curate: filter 'band' dropped all 32 prompts left in iteration 1")
        return True

    monkeypatch.setattr(Lab, "run_piece", run_piece)
    code, out, err = run_cli("lab", "run", "--allow-dirty", str(lab))
    assert ran == ["control/0", "band/0", "ttrl/0", "control/1", "band/1", "ttrl/1"]
    assert code == 1 and "4 arm x seed piece(s) finished" in out
    assert "2 piece(s) failed (the others ran): band/0: curate: filter 'band' dropped all 32 prompts" in err
