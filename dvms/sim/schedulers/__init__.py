"""The schedulers the simulator compares, registered by name.

    static       nothing moves after the balanced initial placement
    centralized  VMPlaceS's Entropy loop: one solver over every host, every period
    dvms         DVMS partitions (the real partition core on simulated nodes);
                 dvms-ring and dvms-random change only the recruitment order;
                 dvms-localsearch adds the local search after repairs;
                 dvms-mttr the same, ranking the shortest plan first;
                 dvms-nolocality ignores where images are (no image-locality score)

A scheduler is built from the scenario's ``[scheduler]`` table (``ScenarioParams``)
and attaches itself to a ``World``. ``register_scheduler`` adds one (a study's own
variant, a test's probe); the names above are always there.
"""

from __future__ import annotations

from collections.abc import Callable

from dvms.partition.config import Recruitment
from dvms.placement import PlacementConfig
from dvms.sim.scenario import ScenarioParams
from dvms.sim.schedulers.centralized import Centralized
from dvms.sim.schedulers.dvms import DvmsScheduler
from dvms.sim.schedulers.static import Static
from dvms.sim.world import Scheduler

__all__ = [
    "SCHEDULERS",
    "Centralized",
    "DvmsScheduler",
    "SchedulerFactory",
    "Static",
    "UnknownScheduler",
    "make_scheduler",
    "register_scheduler",
    "unknown_scheduler_message",
]

SchedulerFactory = Callable[[ScenarioParams], Scheduler]


def _dvms(recruitment: Recruitment | None) -> SchedulerFactory:
    def factory(params: ScenarioParams) -> Scheduler:
        return DvmsScheduler(params, recruitment)

    return factory


def _dvms_local_search(params: ScenarioParams) -> Scheduler:
    """DVMS whose leaders run the local search pass after each repair
    (``PlacementConfig.local_search_evals``): its plans against the greedy ones."""
    placement = PlacementConfig(local_search_evals=LOCAL_SEARCH_EVALS)
    return DvmsScheduler(params, placement=placement, name="dvms-localsearch")


def _dvms_mttr(params: ScenarioParams) -> Scheduler:
    """DVMS whose leaders' local search ranks the shortest plan first
    (``PlacementConfig.objective = "mttr"``): it may move more VMs to relieve sooner."""
    placement = PlacementConfig(local_search_evals=LOCAL_SEARCH_EVALS, objective="mttr")
    return DvmsScheduler(params, placement=placement, name="dvms-mttr")


def _dvms_no_locality(params: ScenarioParams) -> Scheduler:
    """DVMS whose leaders ignore where images are (``image_locality_weight`` = 0): the
    baseline of the image-locality score (scenario ``image-launch``)."""
    placement = PlacementConfig(image_locality_weight=0.0)
    return DvmsScheduler(params, placement=placement, name="dvms-nolocality")


#: Plans a ``dvms-localsearch`` leader evaluates per repair (bench/plan_quality.py).
LOCAL_SEARCH_EVALS = 100


#: Name -> factory. The built-in names; ``register_scheduler`` adds more.
SCHEDULERS: dict[str, SchedulerFactory] = {
    "static": Static,
    "centralized": Centralized,
    "dvms": _dvms(None),
    "dvms-ring": _dvms("ring"),
    "dvms-random": _dvms("random"),
    "dvms-localsearch": _dvms_local_search,
    "dvms-mttr": _dvms_mttr,
    "dvms-nolocality": _dvms_no_locality,
}


class UnknownScheduler(ValueError):
    """A scheduler name nobody registered."""


def register_scheduler(name: str, factory: SchedulerFactory) -> None:
    SCHEDULERS[name] = factory


def unknown_scheduler_message(name: str) -> str:
    return f"unknown scheduler {name!r}; known: {', '.join(sorted(SCHEDULERS))}"


def make_scheduler(name: str, params: ScenarioParams) -> Scheduler:
    factory = SCHEDULERS.get(name)
    if factory is None:
        raise UnknownScheduler(unknown_scheduler_message(name))
    return factory(params)
