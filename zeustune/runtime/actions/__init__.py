"""Step actions: what the runtime does at a step of a plan, one module per letter.

Every action is an :class:`Action` in :data:`ACTIONS` (a module's ``ACTION``, registered here): its
letter, its cost class (how a step of it is priced), and the functions the hook dispatches to.
They all take one :class:`StepContext`, so an action never reaches into the hook:

- ``record(ctx, psi)``: fresh steps (cost ``"fresh"``); the hook has called the denoiser and
  hands over its output;
- ``output(ctx) -> psi``: predicted steps (``"predicted"``, and for now ``"fraction"``); the
  denoiser is not called and this tensor is returned in its place;
- ``decide(ctx) -> letter``: steps decided at run time (``"decided"``); the named action runs;
- ``observe(ctx, psi)``: after every step of a run whose plan names the letter, fresh or not
  (the Lagrange tail keeps x0 anchors from both);
- ``state(predictor)``: a factory for the action's own per-branch state (``ctx.state(letter)``);
- ``delegates(predictor) -> letters``: for decided actions, the letters they may run, so those
  actions' observers run too;
- ``probe(ctx) -> decide`` and ``remember(ctx, capture)``: probe actions (``"probe"``); the hook
  runs the denoiser through :class:`zeustune.runtime.probes.BlockProbe` with ``decide`` armed, and
  hands every full call's capture to ``remember``.

Adding an action: a module here with its functions (the tensor math as plain functions, importable
on their own) and its ``ACTION``; the module in the registration line at the bottom of this file; its
letter in :data:`zeustune.plans.ACTIONS` (plans are validated there, without torch); its tests.

>>> from zeustune.runtime import actions
>>> [(a.letter, a.cost) for a in actions.ACTIONS.values()]
[('F', 'fresh'), ('E', 'predicted'), ('R', 'predicted'), ('S', 'predicted'), ('L', 'predicted'), ('C', 'predicted'), ('A', 'decided'), ('D', 'fraction'), ('P', 'fraction'), ('G', 'probe')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

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
        from ..hook import ScheduleMismatchError  # the hook imports this package: import on use

        raise ScheduleMismatchError(source, "plan", letter, f"a letter this runtime implements ({', '.join(ACTIONS)})")
    return action


# The built-in actions, registered in the order plans.ACTIONS lists them (here, not on import, as
# modules import each other's functions). Below the registry: their modules import Action from it.
from . import adaptive, extrapolate, forecast, fresh, lagrange, probe, reduced, reuse, scaled, stage  # noqa: E402

for _module in (fresh, extrapolate, reuse, scaled, lagrange, forecast, adaptive, reduced, stage, probe):
    register(_module.ACTION)
del _module

__all__ = ["ACTIONS", "COSTS", "Action", "BranchState", "Cost", "StepContext", "get", "register"]
