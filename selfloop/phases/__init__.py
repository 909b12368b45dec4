"""One module per phase, run in this order by `selfloop.loop.run_iteration`."""

from collections.abc import Callable

from selfloop.phases import curate, evaluate, judge, promote, rollout, select, synthesize, train
from selfloop.phases.context import PhaseContext

PHASES: dict[str, Callable[[PhaseContext], None]] = {
    "synthesize": synthesize.run,
    "rollout": rollout.run,
    "judge": judge.run,
    "curate": curate.run,
    "select": select.run,
    "train": train.run,
    "evaluate": evaluate.run,
    "promote": promote.run,
}
