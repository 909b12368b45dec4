"""`selfloop report`: a loop's history as a folder that opens offline (index.html with its script and
stylesheet next to it), for sharing. It is drawn from the dashboard's views, charts and templates
(`selfloop.ui`), so a report and the dashboard never disagree; it holds no sample browser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from selfloop.errors import SelfloopError
from selfloop.output_dir import write_folder


def write_report(session: Session, name: str, out: Path) -> Path:
    from selfloop.db.queries import loop_states
    from selfloop.plots import plotly_js
    from selfloop.ui import views
    from selfloop.ui.charts import loop_charts
    from selfloop.ui.templating import HERE, templates

    try:
        segments = views.loop_segments(session, name)
    except LookupError as exc:
        raise SelfloopError(str(exc)) from None
    state = views.find_state(loop_states(session), name)
    columns, rows = views.iteration_table(session, name)
    page = templates().get_template("report.html").render(
        state=state, lineage=segments, columns=columns, rows=rows, events=views.loop_events(session, name),
        charts=loop_charts(segments, views.judges_with_llm(session, [name])), charts_url=None,
        static=".", live=False, refresh_ms=0, written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    # Made to share: the user's umask decides; all or nothing, never through a link.
    assets = (plotly_js(), HERE / "static" / "selfloop.js", HERE / "static" / "style.css")
    write_folder(Path(out), {**{asset.name: asset for asset in assets}, "index.html": page})
    return Path(out) / "index.html"
