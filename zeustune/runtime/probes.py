"""Probes: a cheap look at the current step through hooks on the denoiser's own blocks.

A probe-gated step (G, :mod:`.actions.probe`) runs the denoiser as far as its first ("head")
transformer block and decides there whether the rest is needed. The signal is either the head
block's residual (``head(x) - x``, FirstBlockCache's) or the head block's modulated input (the
output of its ``norm1``, TeaCache's, available before the block's attention runs). The decision
can end the call three ways:

- ``None``: compute the rest of the model (a fresh step; the tail's output is captured so later
  skips can reuse its residual);
- :class:`Skip`: abandon the call; the hook predicts the output from the history (a gate);
- a tensor: the head block's output is replaced by it (head output + a tail residual) and the
  tail blocks pass their inputs through, so the model's own output layers turn it into psi.

No forward code is copied: the hooks wrap the blocks' own ``forward`` (diffusers ``ModelHook``),
and diffusers' TransformerBlockRegistry says where each block takes and returns its hidden states.
While not armed the hooks only call the original forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks._helpers import TransformerBlockRegistry

from ..schedule.format import PROBES

HEAD_HOOK, NORM_HOOK, TAIL_HOOK = "zeustune_probe_head", "zeustune_probe_norm", "zeustune_probe_tail"


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised from a head hook to abandon the denoiser call; the hook predicts with ``letter``."""

    def __init__(self, letter: str):
        super().__init__(letter)
        self.letter = letter


class ProbeUnsupportedError(ValueError):
    """The denoiser has no transformer blocks a probe can hook (UNets, custom models)."""


@dataclass
class Capture:
    """What one armed call saw: the probe's signal, and on a full call the head and tail outputs
    (image hidden states), from which the tail residual follows."""

    signal: torch.Tensor | None = None
    head_out: torch.Tensor | None = None
    tail_out: torch.Tensor | None = None
    replaced: bool = False  # the head's output was replaced and the tail passed through

    @property
    def tail_residual(self) -> torch.Tensor | None:
        if self.head_out is None or self.tail_out is None or self.head_out.shape != self.tail_out.shape:
            return None
        return self.tail_out - self.head_out


#: decide(signal) -> None (compute), a Skip to raise, or a function head_out -> replacement.
Decide = Callable[[torch.Tensor], "None | Skip | Callable[[torch.Tensor], torch.Tensor]"]


def blocks_of(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The denoiser's transformer blocks in call order (double-stream before single-stream on FLUX)."""
    found = []
    for name, child in denoiser.named_children():
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList):
            found.extend(child)
    return found


class BlockProbe:
    """Hooks on one denoiser's blocks: the head block (and its ``norm1`` for the modulated signal)
    and every later block. :meth:`run` arms them for one call."""

    def __init__(self, denoiser: torch.nn.Module, kind: str = "residual"):
        if kind not in PROBES:
            raise ValueError(f"predictor.probe: got {kind!r}, expected one of {', '.join(PROBES)}")
        blocks = blocks_of(denoiser)
        if len(blocks) < 2:
            raise ProbeUnsupportedError(
                f"probe: {type(denoiser).__name__} has {len(blocks)} transformer blocks, expected a head block and a tail "
                "(G steps need a transformer denoiser: FLUX, SD3, Wan)")
        try:
            meta = [TransformerBlockRegistry.get(type(b)) for b in blocks]
        except ValueError as e:  # diffusers knows where the block's hidden states are, or we cannot tell
            raise ProbeUnsupportedError(f"probe: {e}") from None
        self.kind = kind
        self._capture: Capture | None = None
        self._decide: Decide | None = None
        self._replace: Callable | None = None  # set when the tail passes through
        self._blocks = blocks
        norm = getattr(blocks[0], "norm1", None)
        if kind == "modulated" and not isinstance(norm, torch.nn.Module):
            raise ProbeUnsupportedError(f"predictor.probe: got 'modulated', but {type(blocks[0]).__name__} has no norm1 "
                                        "to read the modulated input from; use 'residual'")
        self._hooks = [(blocks[0], HEAD_HOOK, _HeadHook(self, meta[0]))]
        if kind == "modulated":
            self._hooks.append((norm, NORM_HOOK, _NormHook(self)))
        self._hooks += [(b, TAIL_HOOK, _TailHook(self, m, last=i == len(blocks) - 1))
                        for i, (b, m) in enumerate(zip(blocks[1:], meta[1:]), start=1)]
        for module, name, hook in self._hooks:
            registry = HookRegistry.check_if_exists_or_initialize(module)
            if registry.get_hook(name) is not None:
                registry.remove_hook(name, recurse=False)
            registry.register_hook(hook, name)

    def remove(self) -> None:
        for module, name, _ in self._hooks:
            registry = HookRegistry.check_if_exists_or_initialize(module)
            if registry.get_hook(name) is not None:
                registry.remove_hook(name, recurse=False)

    def run(self, forward: Callable, args: tuple, kwargs: dict, decide: Decide | None) -> tuple[object, Capture]:
        """Call ``forward`` with the hooks armed; ``decide=None`` computes everything (and captures).
        Raises :class:`Skip` when the decision abandons the call."""
        self._capture, self._decide, self._replace = Capture(), decide, None
        try:
            out = forward(*args, **kwargs)
            return out, self._capture
        finally:
            self._capture = self._decide = self._replace = None

    # -- called by the hooks -----------------------------------------------------------------
    @torch.compiler.disable
    def _signal(self, signal: torch.Tensor) -> None:
        """The signal is in: decide (once per call)."""
        cap = self._capture
        cap.signal = signal.detach()
        if self._decide is None:
            return
        verdict = self._decide(cap.signal)
        self._decide = None
        if isinstance(verdict, Skip):
            raise verdict
        self._replace = verdict


def _hidden(out, meta):
    return out if isinstance(out, torch.Tensor) else out[meta.return_hidden_states_index]


def _with_hidden(out, meta, hidden):
    if isinstance(out, torch.Tensor):
        return hidden
    out = list(out)
    out[meta.return_hidden_states_index] = hidden
    return tuple(out)


class _HeadHook(ModelHook):
    def __init__(self, probe: BlockProbe, meta):
        super().__init__()
        self.probe, self.meta = probe, meta

    def new_forward(self, module, *args, **kwargs):
        out = self.fn_ref.original_forward(*args, **kwargs)
        probe = self.probe
        if probe._capture is None:
            return out
        head = _hidden(out, self.meta)
        if probe.kind == "residual":
            x = self.meta._get_parameter_from_args_kwargs(self.meta.hidden_states_argument_name, args, kwargs)
            probe._signal(head - x)
        probe._capture.head_out = head
        if probe._replace is not None:
            probe._capture.replaced = True
            return _with_hidden(out, self.meta, probe._replace(head))
        return out


class _NormHook(ModelHook):
    """On the head block's norm1: its (first) output is the modulated input."""

    def __init__(self, probe: BlockProbe):
        super().__init__()
        self.probe = probe

    def post_forward(self, module, output):
        if self.probe._capture is not None and self.probe._capture.signal is None:
            self.probe._signal(output if isinstance(output, torch.Tensor) else output[0])
        return output


class _TailHook(ModelHook):
    def __init__(self, probe: BlockProbe, meta, last: bool):
        super().__init__()
        self.probe, self.meta, self.last = probe, meta, last

    def new_forward(self, module, *args, **kwargs):
        probe = self.probe
        if probe._replace is not None:  # a predicted step: the head's replacement passes through
            return _passthrough(self.meta, args, kwargs)
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.last and probe._capture is not None:
            probe._capture.tail_out = _hidden(out, self.meta)
        return out


def _passthrough(meta, args, kwargs):
    hidden = meta._get_parameter_from_args_kwargs(meta.hidden_states_argument_name, args, kwargs)
    if meta.return_encoder_hidden_states_index is None:
        return hidden
    enc = meta._get_parameter_from_args_kwargs(meta.encoder_hidden_states_argument_name, args, kwargs)
    out = [None, None]
    out[meta.return_hidden_states_index] = hidden
    out[meta.return_encoder_hidden_states_index] = enc
    return tuple(out)


def relative_change(signal: torch.Tensor, reference: torch.Tensor) -> float:
    """``mean|s - s_ref| / mean|s_ref|`` over the whole tensor (the batch decides as one)."""
    ref = reference.abs().mean(dtype=torch.float32)
    if ref == 0:
        return float("inf")
    return float((signal - reference).abs().mean(dtype=torch.float32) / ref)
