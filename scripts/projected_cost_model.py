"""Write cost models priced as on the bench's projection target, for searches whose schedules are
meant for full-size deployments: FLUX.1-dev (image families; docs/search/probe/cost-model-flux-{28,50}.json)
or Wan2.1-14B at 480p, 81 frames (video; search_spaces/tiny-wan-cost-{40,50}.json, the budget lines
tiny-wan's searches use by default: copied from this script's cost-model-wan14b-{40,50}.json).

    python scripts/projected_cost_model.py --target flux --steps 28,50 --out docs/search/probe
    python scripts/projected_cost_model.py --target wan --steps 40,50 --out /tmp  # then cp to search_spaces/tiny-wan-cost-{40,50}.json

Takes a second. Units are full-step runs of the target: ``fixed`` is its text encoders' and VAE's
share f_N (bench.compute.fixed_share), ``call`` one denoiser call (1 - f_N) / N, ``skip`` the hook's
measured work on a predicted step, ``probe`` a predicted G step (the first block: FirstBlockCache's
measured share) and ``reduced`` a D step per factor, all as shares of a call projected to the target
(docs/benchmarks/skip-cost.json, overhead.json, reduced.json, wan-projection.json). ``zeustune search
--cost-model FILE`` then budgets by the projected speedup, the one the bench compares methods at;
on tiny-flux's CPU a predicted G step is 38% of a call, on FLUX.1-dev under 2%; on tiny-wan's CPU the
VAE decode is 13% of a run, on Wan2.1-14B 0.17%.
"""

import argparse
import json
from pathlib import Path

from zeustune.bench import compute

NAMES = {"flux": "flux", "wan": "wan14b"}


def model(steps: int, target: compute.Target) -> dict:
    shares = compute.load_shares(target=target)["shares"]
    f = compute.fixed_share(steps, target.fixed_share_50)
    call = (1 - f) / steps
    return {"fixed": f, "call": call, "skip": shares["R"] * call, "steps": steps, "runs": 0,
            "device": f"{target.name} projection (bench.compute: fixed share, skip and probe shares)",
            "reduced": {k[1:]: v * call for k, v in shares.items() if k.startswith("D")},
            "probe": shares["probe-residual"] * call}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=sorted(NAMES), default="flux", help="the projection: flux (FLUX.1-dev) or wan (Wan2.1-14B)")
    ap.add_argument("--steps", default="28,50", help="comma-separated step counts (default: %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="folder for cost-model-<target>-<steps>.json")
    args = ap.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",")]
    except ValueError:
        ap.error(f"--steps: got {args.steps!r}, expected comma-separated integers like 28,50")
    if any(s < 2 for s in steps):
        ap.error(f"--steps: got {args.steps!r}, expected step counts >= 2")
    target = compute.target_for(args.target)
    args.out.mkdir(parents=True, exist_ok=True)
    for n in steps:
        path = args.out / f"cost-model-{NAMES[args.target]}-{n}.json"
        path.write_text(json.dumps(model(n, target), indent=1) + "\n")
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
