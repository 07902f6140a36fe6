"""Peers at matched budgets on one model: the same as ``zeustune bench`` (see zeustune/bench/run.py).

    python scripts/bench_peers.py --model tiny-flux
"""

import sys

from zeustune.bench.run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
