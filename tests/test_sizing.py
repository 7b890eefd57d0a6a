"""--size auto: the model's depth follows the budget and the corpus."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from textgen.records import Notice
from textgen.settings import ModelConfig, ModelShape, TrainConfig
from textgen.store import folder as model_folder
from textgen.text.corpus import open_corpus
from textgen.training import sizing
from textgen.training.recipe import depth_shape
from textgen.training.run import train

CPU = torch.device("cpu")
ARCH = ModelShape(context_window=64)


def flop_bound_speed(config: ModelConfig, settings: TrainConfig, device) -> float:
    """A device that runs 1 TFLOP/s whatever the model's shape."""
    return 1e12 / (6 * sizing.parameters(config))


def never_measured(*args) -> float:
    raise AssertionError("a run counted in steps needs no speed measurement")


def choose(budget: float | None = None, steps: int | None = None, corpus: int = 10**9, **kw):
    config = TrainConfig(time_budget=budget, steps=steps, batch_size=16)
    speed = flop_bound_speed if budget is not None else never_measured
    return sizing.choose(ARCH, 2048, corpus, config, CPU, speed=speed, **kw)


def params(depth: int) -> int:
    return sizing.parameters(ARCH.but(depth_shape(depth)).config(2048))


def test_depth_grows_with_the_time_budget():
    depths = [choose(budget=seconds).depth for seconds in (1, 60, 3600, 36000)]
    assert depths == sorted(depths) and depths[0] < depths[-1]


def test_the_chosen_depth_is_the_largest_within_both_limits():
    for budget, corpus in ((600, 10**9), (36000, 10**9), (36000, 200_000)):
        chosen = choose(budget=budget, corpus=corpus)
        assert chosen.parameters == params(chosen.depth)
        assert chosen.planned_tokens >= sizing.TOKENS_PER_PARAMETER * chosen.parameters
        assert chosen.parameters <= sizing.PARAMETERS_PER_TOKEN * corpus
        bigger = params(chosen.depth + 1)
        planned_bigger = 1e12 / (6 * bigger) * budget
        assert (
            planned_bigger < sizing.TOKENS_PER_PARAMETER * bigger
            or bigger > sizing.PARAMETERS_PER_TOKEN * corpus
        )


def test_a_small_corpus_caps_the_depth_however_long_the_run():
    long_run = choose(budget=10 * 3600)
    small_corpus = choose(budget=10 * 3600, corpus=100_000)
    assert small_corpus.depth < long_run.depth
    assert small_corpus.parameters <= sizing.PARAMETERS_PER_TOKEN * 100_000


def test_a_run_counted_in_steps_is_sized_without_measuring_speed():
    short, long = choose(steps=100), choose(steps=100_000)
    assert short.depth == sizing.MIN_DEPTH and long.depth > short.depth
    assert long.planned_tokens == 100_000 * 16 * 64 and long.tokens_per_second is None


def test_training_speed_is_measured_on_the_device():
    config = replace(depth_shape(2), context_window=32).config(300)
    rate = sizing.training_speed(config, TrainConfig(batch_size=4), CPU)
    assert rate > 0 and rate != float("inf")


def test_training_without_a_shape_sizes_the_model_and_says_so(tmp_path, corpus_file):
    events = []
    config = TrainConfig(steps=2, time_budget=None, batch_size=4, eval_interval=100)
    arch = ModelShape(context_window=32, dropout=0.0)
    with open_corpus([str(corpus_file)]) as corpus:
        train(tmp_path / "auto", corpus, config, arch, 300, callback=events.append)
    notices = [e.message for e in events if isinstance(e, Notice) and "size auto" in e.message]
    assert len(notices) == 1
    model = model_folder.load(tmp_path / "auto").model
    # ~10k tokens of text allow no more than the smallest depth
    assert model.config.n_layer == sizing.MIN_DEPTH
    assert model.config.n_embd == depth_shape(sizing.MIN_DEPTH).n_embd
    assert "2 layers × 64 wide" in notices[0]


@pytest.mark.parametrize("depth", [2, 3, 4, 8])
def test_the_dial_keeps_heads_of_32(depth):
    shape = depth_shape(depth)
    assert shape.n_embd // shape.n_head == 32 and shape.n_layer == depth


@pytest.mark.parametrize(
    "options, shape",
    [
        (["--layers", "3"], (3, 96, 3)),  # with auto, --layers is the depth on the dial
        (["--layers", "3", "--width", "64", "--heads", "2"], (3, 64, 2)),
        (["--size", "tiny", "--layers", "3"], (3, 64, 2)),  # a preset, one part overridden
    ],
)
def test_the_shape_can_be_set_by_hand(tmp_path, corpus_file, options, shape):
    from textgen.cli.app import main

    folder = tmp_path / "by-hand"
    argv = ["train", str(corpus_file), "--model", str(folder), "--steps", "1", *options]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--context", "16", "--vocab-size", "300"])
    assert exit_info.value.code == 0
    config = model_folder.load(folder).model.config
    assert (config.n_layer, config.n_embd, config.n_head) == shape


def test_the_tokens_a_run_plans_come_from_its_steps_or_its_time_whichever_is_fewer():
    config = ModelShape(context_window=32, n_layer=2, n_embd=64, n_head=2).config(300)

    def speed(model_config, train, device):  # 1,000 tokens a second
        return 1000.0

    steps = TrainConfig(steps=10, time_budget=None, batch_size=4)
    assert sizing.planned_tokens(config, steps, CPU, speed=speed) == (10 * 4 * 32, None)
    timed = TrainConfig(steps=None, time_budget=60, batch_size=4)
    assert sizing.planned_tokens(config, timed, CPU, speed=speed) == (60_000, 1000.0)
    both = TrainConfig(steps=10, time_budget=60, batch_size=4)
    assert sizing.planned_tokens(config, both, CPU, processes=2, speed=speed)[0] == 1280
