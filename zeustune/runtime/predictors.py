"""Predictors of a skipped step's denoiser output: small pure functions on tensors.

psi is whatever the denoiser returns (epsilon, v or flow velocity). The history they read holds
fresh outputs only, so a prediction is never built on another prediction.
"""

# The math lives with its action in runtime/actions/ (one technique per file); this keeps old imports working.
from .actions.extrapolate import zeus_extrapolate
from .actions.lagrange import lagrange, output_from_x0, x0_from_output
from .actions.reuse import reuse
from .actions.scaled import scaled_extrapolate

__all__ = ["lagrange", "output_from_x0", "reuse", "scaled_extrapolate", "x0_from_output", "zeus_extrapolate"]
