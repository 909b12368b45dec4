"""The same problem in another training wording of its task family: CoIN's paired prompt and the cross-view
signal's second view. Held-out wordings are never used, so no paraphrase leaks what a suite asks."""

from __future__ import annotations

from selfloop.families import family


def paraphrases(rows: list[tuple[int, str | None, str | None, str]], levels: list[int]) -> dict[int, str]:
    """prompt id -> the same problem in another training wording, for (id, family, task key, text) rows; a prompt
    whose family has no training-only variants (or no generator) has none."""
    worded: dict[str, dict[str, dict[str, str]]] = {}
    out = {}
    for prompt_id, name, key, text in rows:
        if name is None or key is None:
            continue
        try:
            spec = family(name)
        except LookupError:
            continue
        if spec.problems is None or "varied" not in spec.phrasings or "train" not in spec.splits:
            continue
        if name not in worded:
            worded[name] = {ph: {p.key: p.prompt for p in spec.problems(levels, "train", ph)} for ph in ("varied", "seen")}
        for phrasing in ("varied", "seen"):
            other = worded[name][phrasing].get(key)
            if other is not None and other != text:
                out[prompt_id] = other
                break
    return out
