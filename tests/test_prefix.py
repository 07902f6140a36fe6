"""Exact prefix reuse in the search's evaluator: a candidate's denoiser calls that an earlier run of
the same batch already made (same letters up to the step, same settings; or the all-fresh prefix,
whatever the settings) are replayed, and the losses are bit-identical to running every call."""

from __future__ import annotations

import pytest
import torch

from zeustune.quality import metrics as M
from zeustune.models.registry import TINY_FLUX_DIR, load
from zeustune.schedule.plans import Plan
from zeustune.models.prompts import load_prompts
from zeustune.quality.references import ReferenceCache
from zeustune.search.evaluator import Evaluator
from zeustune.search.prefix import PrefixCache
from zeustune.search.space import Decoded

pytestmark = pytest.mark.skipif(not (TINY_FLUX_DIR / "model_index.json").is_file(), reason="tiny-flux weights not present")

N = 28
P1 = Plan("FFFFERFERRFERFERRFFERFERFFFF")
P2 = Plan("FFFFERFERRFERFFRRFFERFERFFFF")  # a refinement neighbour: differs from step 13 on
ADAPTIVE = Decoded(Plan("FFF" + "A" * 23 + "FF"), knobs=(("criterion", "sada"), ("gates", "ERR"), ("max_run", 3),
                                                        ("threshold", 0.0)))
CANDIDATES = [Decoded(P1), Decoded(P2), Decoded(P2, gamma=0.7), Decoded(Plan("FF" + "S" * 3 + "F" * 23), gamma=0.8),
              Decoded(P1, uncond=Plan("FFRRFRRFRRFRRFRRFRRFRRFRRFFF")), ADAPTIVE, ADAPTIVE]


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory):
    pipe, spec = load("tiny-flux", progress=False)
    prompts = load_prompts(spec, "calib")[:4]
    cache = ReferenceCache(tmp_path_factory.mktemp("refs"))
    out = []
    for prefix_bytes in (None, 1 << 30):
        ev = Evaluator(pipe, spec, prompts, 0, M.resolve("auto"), batch=2, prefix_bytes=prefix_bytes)
        ev.prepare(cache, progress=False)
        out.append(ev)
    return out


def test_replayed_prefixes_give_bit_identical_losses_and_save_calls(evaluators):
    plain, reusing = evaluators
    for d in CANDIDATES:
        a, b = plain.losses(d), reusing.losses(d)
        assert torch.equal(a, b), d.key
        assert plain.last_calls == reusing.last_calls  # the calls the deployment makes are unchanged
    stats = reusing.prefix
    assert plain.prefix is None and stats.served > 0
    # P1 then P2 (13 steps shared: 9 calls per branch), the same P2 with another gamma (only the
    # all-fresh 4 steps), the S plan (2), P1 with its own uncond plan (2: the uncond letters differ at 2)
    assert stats.served >= 2 * 2 * (4 + 9 + 4 + 2)


def test_the_cache_keeps_to_its_byte_budget_and_shares_only_the_fresh_prefix_across_settings():
    c = PrefixCache(budget=3 * 4 * 10)
    t = torch.zeros(10)  # 40 bytes
    calls = [(0, t), (1, t), (2, t)]
    c.store((0, 2), ("F", "F", "E"), "k1", calls)
    assert c.lookup((0, 2), ("F", "F", "E"), "k1")[0] == 3
    assert c.lookup((0, 2), ("F", "F", "E"), "k2")[0] == 2  # other knobs: the all-fresh steps only
    assert c.lookup((0, 2), ("F", "R", "E"), "k1")[0] == 1
    assert c.lookup((2, 4), ("F", "F", "E"), "k1") == (0, [])  # another batch
    c.store((2, 4), ("F", "F", "F"), "k1", calls)  # over the budget: the least recently used goes
    assert c.nbytes <= c.budget and len(c.entries) == 1


def test_kept_reference_features_give_the_same_st_lpips_and_are_really_used():
    torch.manual_seed(0)
    x, y = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    direct = M.st_lpips(x, y)
    v, kept = M.st_lpips_kept(x, y)
    again, _ = M.st_lpips_kept(x, y, kept)
    assert torch.equal(v, direct) and torch.equal(again, direct)  # the same arithmetic, bit for bit
    _, other = M.st_lpips_kept(x, torch.rand(3, 3, 32, 32))
    assert not torch.equal(M.st_lpips_kept(x, y, other)[0], direct)  # kept features are what is compared against
    assert torch.equal(M.st_lpips(y, y), torch.zeros(3))


def test_multi_fidelity_stops_a_worse_plan_at_the_first_rung_and_keeps_an_equal_one(evaluators):
    from zeustune.search.evaluator import Bar
    from zeustune.search.executors import score

    _, ev = evaluators
    rival = tuple(ev.losses(Decoded(P1)).tolist())
    bar = Bar(rival=rival, z=1.5, rival_trial=7)
    worse = score(ev, Decoded(Plan("F" + "R" * 25 + "FF")), bar)  # 26 reused steps: far worse on every prompt
    assert worse.kind == "pruned" and worse.prompts == 2 and "trial 7 on the same prompts" in worse.reason  # 4 prompts: rungs every 2
    same = score(ev, Decoded(P1), bar)  # no worse than the rival: scored on every prompt
    assert same.kind == "complete" and same.losses == rival


def test_held_out_scores_are_cached_by_everything_they_depend_on(evaluators, tmp_path, monkeypatch):
    ev = evaluators[0]
    cache = ReferenceCache(tmp_path)
    scaled = [Decoded(Plan("FF" + "S" * 3 + "F" * 23), gamma=g) for g in (0.7, 0.8)]
    plans = [Decoded(P1), *scaled, ADAPTIVE]
    first = {d.key: ev.scored(d, cache) + (list(ev.last_calls),) for d in plans}
    assert [hit for _, hit, _ in first.values()] == [False] * 4  # gamma and the plan are in the key
    assert not torch.equal(first[scaled[0].key][0], first[scaled[1].key][0])
    monkeypatch.setattr(ev, "losses", lambda d, bar=None: pytest.fail(f"{d.key} rendered again"))
    for d in plans:
        losses, hit = ev.scored(d, cache)
        assert hit and torch.equal(losses, first[d.key][0]) and losses.dtype == first[d.key][0].dtype
        assert ev.last_calls == first[d.key][2]  # an adaptive plan's counted calls come back too
    assert min(first[ADAPTIVE.key][2]) < N  # SADA skipped something: the calls are not the trivial ones
    other = Evaluator(ev.pipe, ev.spec, ev.prompts, 0, "gmsd", batch=2, prefix_bytes=None)
    other.refs = ev.refs
    assert other.score_key(Decoded(P1)) != ev.score_key(Decoded(P1))  # the metric is in the key
    with pytest.raises(pytest.fail.Exception):
        ev.scored(Decoded(P2), cache)  # a plan never scored is rendered


def test_prompt_embeddings_are_encoded_once_per_batch_and_change_nothing(evaluators):
    plain, reusing = evaluators
    assert plain.embeds is None and reusing.embeds is not None
    reusing.losses(Decoded(P2))
    misses, hits = reusing.embeds.misses, reusing.embeds.hits
    for d in (Decoded(P1), Decoded(Plan("F" * N))):
        assert torch.equal(plain.losses(d), reusing.losses(d))
    assert reusing.embeds.misses == misses  # each batch was encoded once, by the first candidate
    assert reusing.embeds.hits - hits == 2 * 2 * 2  # two batches, two encode calls each (true CFG), two candidates
    assert "encode_prompt" not in vars(reusing.pipe)  # timing runs see the pipeline's own method


def test_the_embedding_memo_passes_tensor_arguments_through_and_hands_out_copies():
    from zeustune.search.embeds import EmbeddingMemo

    calls = []

    def encode(prompt, prompt_embeds=None, device=None):
        calls.append(prompt)
        return torch.full((2,), float(len(calls))), torch.ones(1)

    memo = EmbeddingMemo(encode, size=2)
    a = memo(["x", "y"], device=torch.device("cpu"))
    a[0].add_(100)  # a pipeline changing what it got does not change what is stored
    assert torch.equal(memo(["x", "y"], device=torch.device("cpu"))[0], torch.full((2,), 1.0)) and len(calls) == 1
    memo("x", prompt_embeds=torch.zeros(1)), memo("x", prompt_embeds=torch.zeros(1))
    assert len(calls) == 3 and len(memo.entries) == 1  # precomputed embeddings: not a key, passed through
    memo(["x"]), memo(["z"]), memo(["x", "y"])
    assert len(calls) == 6 and len(memo.entries) == 2  # ["x", "y"] had been evicted (size 2)


def test_a_cache_that_cannot_store_scores_costs_a_warning_not_the_search(evaluators, tmp_path, monkeypatch):
    ev = evaluators[0]
    cache = ReferenceCache(tmp_path)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "put", full_disk)
    with pytest.warns(UserWarning, match="not stored.*No space left"):
        losses, hit = ev.scored(Decoded(P1), cache)
    assert not hit and torch.equal(losses, ev.losses(Decoded(P1)))
