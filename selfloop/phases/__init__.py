"""One module per phase, run in this order by `selfloop.loop.run_iteration`."""

from collections.abc import Callable

from selfloop.phases import judge, rollout, synthesize
from selfloop.phases.context import PhaseContext

PHASES: dict[str, Callable[[PhaseContext], None]] = {
    "synthesize": synthesize.run,
    "rollout": rollout.run,
    "judge": judge.run,
}
