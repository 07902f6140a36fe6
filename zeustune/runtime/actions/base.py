"""What every step action is built from: the :class:`Action` record, the :class:`StepContext` the
hook hands it, and the registry :data:`ACTIONS` with :func:`register` and :func:`get`. The action
modules import these from here and the package registers them (``zeustune.runtime.actions``'s
docstring says what each function of an Action does)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from ..errors import ScheduleMismatchError
from .state import BranchState

Cost = Literal["fresh", "predicted", "decided", "fraction", "probe"]
#: fresh: one denoiser call; predicted: no call; decided: fresh or predicted, chosen at run time;
#: fraction: a denoiser call at a fraction of the full cost (e.g. reduced resolution); probe: the
#: denoiser's first block runs, then the rest or a prediction (the hook runs it through a probe).
COSTS: tuple[str, ...] = get_args(Cost)

# The function each cost class needs, so a misdeclared action fails at registration, not mid-run.
_NEEDS = {"fresh": "record", "predicted": "output", "fraction": "output", "decided": "decide", "probe": "probe"}


@dataclass(frozen=True)
class Action:
    """A step letter and what the runtime does for it (see the module docstring)."""

    letter: str
    cost: Cost
    output: Callable[[StepContext], torch.Tensor] | None = None
    record: Callable[[StepContext, torch.Tensor], None] | None = None
    decide: Callable[[StepContext], str] | None = None
    observe: Callable[[StepContext, torch.Tensor], None] | None = None
    state: Callable[[Any], Any] | None = None
    delegates: Callable[[Any], str] | None = None
    #: probe actions: ``probe(ctx)`` gives BlockProbe's decision function for this step;
    #: ``remember(ctx, capture)`` runs after every full call of a plan that has the letter.
    probe: Callable[[StepContext], Any] | None = None
    remember: Callable[[StepContext, Any], None] | None = None

    def __post_init__(self):
        if not (isinstance(self.letter, str) and len(self.letter) == 1):
            raise ValueError(f"action letter: got {self.letter!r}, expected one character")
        if self.cost not in COSTS:
            raise ValueError(f"action {self.letter}: cost: got {self.cost!r}, expected one of {', '.join(COSTS)}")
        need = _NEEDS[self.cost]
        if getattr(self, need) is None:
            raise ValueError(f"action {self.letter}: {need}: got None, expected a function (cost {self.cost!r})")


@dataclass(slots=True)
class StepContext:
    """One denoiser call as the actions see it (made by the hook for every call)."""

    branch: BranchState  # the current CFG branch's state
    name: str  # the branch's name (cond, uncond, shared, ...)
    k: int  # step index in the run
    t: float  # the predictors' time: k, or the step's sigma (predictor.time)
    predictor: Any  # the schedule's Predictor settings
    args: tuple  # the denoiser call, as the pipeline made it
    kwargs: dict
    family: Any  # the pipeline's Family
    scheduler: Any  # the pipeline's scheduler
    sigmas: list[float] | None  # the run's sigmas, one per step (None for schedulers without)
    plan: Any  # the Plan this run executes
    fresh: bool = False  # set by the hook once the denoiser has run for this step (observers read it)
    denoise: Any = None  # the denoiser itself, for actions of cost "fraction" (they call it differently)
    denoiser: Any = None  # and its module (its config says what latent sizes it takes)

    @property
    def sample(self) -> torch.Tensor:
        """The noisy sample the denoiser was called on."""
        key = getattr(self.family, "sample", "sample")
        return self.kwargs[key] if key in self.kwargs else self.args[0]

    @property
    def timestep(self):
        return self.kwargs.get("timestep", self.args[1] if len(self.args) > 1 else None)

    def state(self, letter: str) -> Any:
        """The per-branch state of the action ``letter``, made by its factory on first use."""
        return self.branch.own_state(letter, ACTIONS[letter].state, self.predictor)


ACTIONS: dict[str, Action] = {}


def register(action: Action, *, replace: bool = False) -> Action:
    """Add an action to the registry (``replace=True`` to override a letter); returns it."""
    if action.letter in ACTIONS and not replace:
        raise ValueError(f"action letter: got {action.letter!r}, expected one not registered yet")
    ACTIONS[action.letter] = action
    return action


def get(letter: str, source: str = "zeustune runtime") -> Action:
    """The action of a letter; ScheduleMismatchError naming the known letters if there is none."""
    action = ACTIONS.get(letter)
    if action is None:
        raise ScheduleMismatchError(source, "plan", letter, f"a letter this runtime implements ({', '.join(ACTIONS)})")
    return action
