"""Quiet scoring (zeustune/quality/repeats.py): a library warning that repeats once per sampled
image is shown once per phase, with a count at the end; a prompt longer than tiny-flux's tokenizer
limit, rendered for references, says so once."""

from __future__ import annotations

import logging
import warnings

import pytest
from diffusers.utils import logging as diffusers_logging

from zeustune.models.registry import TINY_FLUX_DIR
from zeustune.quality.repeats import collapse_repeats


def test_a_python_warning_in_a_loop_is_shown_once_and_counted():
    lines = []
    with pytest.warns(UserWarning) as shown:
        with collapse_repeats("phase", out=lines.append) as counts:
            for i in range(5):
                warnings.warn(f"prompt {i} was truncated")  # one call site, a different text each time
    assert [str(w.message) for w in shown] == ["prompt 0 was truncated"]
    assert lines == ["phase: shown once, repeated 4 more times: UserWarning: prompt 0 was truncated"]
    assert list(counts.values()) == [5]


def test_ignored_warnings_stay_ignored_and_single_ones_add_no_line():
    lines = []
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("ignore", DeprecationWarning)
        with collapse_repeats("phase", out=lines.append):
            for _ in range(3):
                warnings.warn("old", DeprecationWarning)
            warnings.warn("once")
    assert [str(w.message) for w in shown] == ["once"] and lines == []


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_diffusers_log_record_in_a_loop_is_shown_once_and_counted():
    logger = diffusers_logging.get_logger("diffusers.pipelines.zeustune_test")
    root = logging.getLogger("diffusers")  # where diffusers' records are handled (it does not propagate)
    seen, lines = Collect(), []
    root.addHandler(seen)
    try:
        with collapse_repeats("references", out=lines.append):
            for i in range(4):
                logger.warning(f"The following part of your input was truncated: ['words {i}']")
        logger.warning("after the phase")  # the filter went with it
    finally:
        root.removeHandler(seen)
    assert seen.messages == ["The following part of your input was truncated: ['words 0']", "after the phase"]
    assert lines == ["references: shown once, repeated 3 more times: The following part of your input was truncated: ['words 0']"]


def truncate():
    warnings.warn("truncated")  # one call site, as in a pipeline's encode_prompt


def test_phases_nest_and_each_says_what_it_held_back():
    outer, inner = [], []
    with warnings.catch_warnings(record=True) as shown:
        with collapse_repeats("search", out=outer.append):
            with collapse_repeats("references", out=inner.append):
                for _ in range(3):
                    truncate()
            for _ in range(2):
                truncate()
    assert len(shown) == 1
    assert inner == ["references: shown once, repeated 2 more times: UserWarning: truncated"]
    assert outer == ["search: shown once, repeated 2 more times: UserWarning: truncated"]


@pytest.mark.skipif(not (TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not built")
def test_a_prompt_over_the_tokenizer_limit_warns_once_per_phase(tmp_path, capfd):
    from zeustune.models import settings
    from zeustune.models.registry import load, resolve
    from zeustune.quality.evaluate import references
    from zeustune.quality.references import ReferenceCache

    pipe, spec = load(settings.apply(resolve("tiny-flux"), steps=2), progress=False)
    limit = pipe.tokenizer.model_max_length
    prompts = [f"{'a red circle on a blue striped background ' * limit} number {i}" for i in range(3)]
    capfd.readouterr()
    references(pipe, spec, prompts, 0, ReferenceCache(tmp_path), progress=False, batch=1)
    err = capfd.readouterr().err
    # both text encoders' truncation notices (CLIP's and T5's), once each, then counted
    assert err.count("The following part of your input was truncated because CLIP") == 1, err
    assert err.count("The following part of your input was truncated because `max_sequence_length`") == 1, err
    assert "references: shown once, repeated 2 more times: The following part of your input was truncated because CLIP" in err
