"""Python imports this at start-up in a test's subprocesses (tests/fake_clock.py's ``env()`` puts
this folder on PYTHONPATH): once zeustune.quality.evaluate is loaded, its stopwatches ``timed`` and
``timed_steps`` are tests/fake_clock.py's. Nothing else is imported before then, so a plain ``python`` stays fast."""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

TARGET = "zeustune.quality.evaluate"


class _SwapStopwatch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # find the module the ordinary way, once
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            clock = importlib.util.spec_from_file_location("fake_clock", Path(__file__).resolve().parents[1] / "fake_clock.py")
            fake = importlib.util.module_from_spec(clock)
            clock.loader.exec_module(fake)
            module.timed = fake.timed  # before any importer binds the names (search.evaluator does)
            module.timed_steps = fake.timed_steps

        spec.loader.exec_module = exec_module
        return spec


if __name__ == "sitecustomize":  # loaded by Python at start-up, not imported by pytest's doctest collection
    sys.meta_path.insert(0, _SwapStopwatch())
