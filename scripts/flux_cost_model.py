"""Write cost models priced as on FLUX.1-dev (the bench's projection), for searches whose schedules
are meant for FLUX-size deployments: docs/search/probe/cost-model-flux-{28,50}.json.

Takes a second. Units are FLUX.1-dev full-step runs: ``fixed`` is the text encoders' and VAE's
share f_N (bench.compute.fixed_share), ``call`` one denoiser call (1 - f_N) / N, ``skip`` the hook's
measured work on a predicted step and ``probe`` a predicted G step (the first block:
FirstBlockCache's measured share), both as shares of a call (docs/benchmarks/skip-cost.json,
overhead.json). ``zeustune search --cost-model FILE`` then budgets by the projected speedup, the
one the bench compares methods at; on tiny-flux's CPU a predicted G step is 38% of a call, on
FLUX.1-dev under 2%.
"""

import json
import sys
from pathlib import Path

from zeustune.bench import compute

OUT = Path(__file__).resolve().parents[1] / "docs" / "search" / "probe"


def model(steps: int) -> dict:
    shares = compute.load_shares()["shares"]
    f = compute.fixed_share(steps)
    call = (1 - f) / steps
    return {"fixed": f, "call": call, "skip": shares["R"] * call, "steps": steps, "runs": 0,
            "device": "FLUX.1-dev projection (bench.compute: fixed share, skip and probe shares)",
            "reduced": {k[1:]: v * call for k, v in shares.items() if k.startswith("D")},
            "probe": shares["probe-residual"] * call}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for n in (int(a) for a in (sys.argv[1:] or ["28", "50"])):
        path = OUT / f"cost-model-flux-{n}.json"
        path.write_text(json.dumps(model(n), indent=1) + "\n")
        print(path)
