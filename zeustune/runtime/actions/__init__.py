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
on their own) and its ``ACTION`` (an :class:`Action` from ``.base``, which the action modules import
instead of this package); the module in the registration line at the bottom of this file; its
letter in :data:`zeustune.plans.ACTIONS` (plans are validated there, without torch); its tests.

>>> from zeustune.runtime import actions
>>> [(a.letter, a.cost) for a in actions.ACTIONS.values()]
[('F', 'fresh'), ('E', 'predicted'), ('R', 'predicted'), ('S', 'predicted'), ('L', 'predicted'), ('C', 'predicted'), ('A', 'decided'), ('D', 'fraction'), ('P', 'fraction'), ('G', 'probe')]
"""

from __future__ import annotations

from .base import ACTIONS, COSTS, Action, Cost, StepContext, get, register
from .state import BranchState

# The built-in actions, registered in the order plans.ACTIONS lists them (here, not on import, as
# modules import each other's functions). Their modules import Action from .base, not from here.
from . import adaptive, extrapolate, forecast, fresh, lagrange, probe, reduced, reuse, scaled, stage

for _module in (fresh, extrapolate, reuse, scaled, lagrange, forecast, adaptive, reduced, stage, probe):
    register(_module.ACTION)
del _module

__all__ = ["ACTIONS", "COSTS", "Action", "BranchState", "Cost", "StepContext", "get", "register"]
