"""Regenerates docs/search/calib-size.md and calib-size.json (summarised in docs/search/README.md).
About 17 minutes on 2 cores: one 3x search per calibration size, 2-4 minutes each (the page's
wall-time column).

Measure how many calibration prompts a search needs: run the same search with several
calibration set sizes and compare the exported schedule's calibration and held-out loss.

A schedule chosen on few prompts fits their quirks (the winner's curse): its calibration loss
looks better than it is. The held-out loss (64 prompts never used in the search) shows that, and
so does the held-out / calibration ratio.

    python experiments/calib_size_study.py --budget 3x --sizes 4 8 16 24 32 48 --out docs/search/calib-size.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from zeustune.search.driver import SearchConfig, run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--budget", default="3x")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 24, 32, 48])
    ap.add_argument("--trials", type=int, default=SearchConfig.trials)
    ap.add_argument("--refine", type=int, default=SearchConfig.refine)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/search/calib-size.md"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="zt-calib-"))
    rows = []
    for n in args.sizes:
        r = run(SearchConfig(model=args.model, budget=args.budget, calib=n, trials=args.trials, refine=args.refine,
                             seed=args.seed, storage=f"sqlite:///{work / f'calib-{n}.db'}", export_dir=work / f"sched-{n}",
                             out=work / f"report-{n}", progress=False))
        e = r["rows"][0]
        rows.append({"calib": n, "nfe": e["nfe"], "measured": r["measured"], "calib_loss": e["calib"], "heldout_loss": e["heldout"],
                     "ratio": e["heldout"] / e["calib"], "seconds": r["seconds"], "plan": e["plan"]})
        print(rows[-1], flush=True)
    lines = [f"# Calibration set size ({args.model}, budget {args.budget}, {args.trials} + {args.refine} trials, seed {args.seed})", "",
             "`python experiments/calib_size_study.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`: one search per size, exported schedule scored "
             "on the 64 held-out prompts.", "",
             "| calib prompts | NFE | measured speedup | calib loss | held-out loss | held-out / calib | search time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['calib']} | {r['nfe']} | {r['measured']:.2f}x | {r['calib_loss']:.4f} | {r['heldout_loss']:.4f} | "
                     f"{r['ratio']:.2f} | {r['seconds']:.0f} s |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
