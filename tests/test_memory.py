"""Every recipe's gpu-preset training step fits a T4: its peak memory, counted on fake tensors, stays under its budget.

The budgets are data next to the recipes (``maelib.configs.GPU_MEMORY_BUDGET_GIB``); the count is
``maelib.costs.step_memory`` (float32, two steps of the recipe's model, batch, masks, loss and AdamW).
The count itself is checked: on real tensors it gives the same bytes, and the CPU allocator's own
events (torch.profiler) agree with it.
"""

import pytest
import torch

from maelib import configs, costs
from maelib.models.attention import use_attention
from maelib.optim import make_optimizer


def test_every_recipe_has_a_budget_and_every_budget_fits_a_t4():
    missing = sorted(set(configs.CONFIGS) - set(configs.GPU_MEMORY_BUDGET_GIB))
    assert not missing, f"recipes without a gpu memory budget: {missing}; measure them with " \
                        "`python -m maelib lessons predict --memory` and add them to configs.GPU_MEMORY_BUDGET_GIB"
    for name, budget in configs.GPU_MEMORY_BUDGET_GIB.items():
        assert 0 < budget <= costs.T4_USABLE_GIB, (name, budget)
        assert configs.recipe(name, "gpu").name == name


@pytest.mark.parametrize("name", sorted(configs.GPU_MEMORY_BUDGET_GIB))
def test_gpu_recipe_fits_its_budget(name):
    run = configs.recipe(name, "gpu")
    memory = costs.step_memory(run, amp="fp32")
    budget = configs.GPU_MEMORY_BUDGET_GIB[name]
    assert memory.batch == run.batch_size
    assert memory.peak <= budget * costs.GIB, f"{name} ({run.batch_size} x {run.img_size} px): {memory}, over its " \
                                              f"budget of {budget} GiB"
    # what the count is made of: the weights, a gradient and two AdamW moments per trainable float, and more
    assert memory.peak > memory.parameters + memory.gradients + memory.optimizer > 0


def test_a_recipe_that_grows_goes_over_its_budget():
    run = configs.recipe("lesson02_vit_faces", "gpu")
    bigger = configs.replace(run, batch_size=3 * run.batch_size)
    assert costs.step_memory(bigger, amp="fp32").peak > configs.GPU_MEMORY_BUDGET_GIB["lesson02_vit_faces"] * costs.GIB


def test_fp16_autocast_holds_less_than_fp32():
    run = configs.recipe("lesson02_vit_faces", "gpu")
    assert costs.step_memory(run, amp="fp16").peak < costs.step_memory(run, amp="fp32").peak


def test_tracker_counts_each_storage_once_while_it_lives():
    tracker = costs.StorageTracker(block=1)
    with tracker:
        a = torch.empty(1024, dtype=torch.float32)  # 4 KiB
        view = a[:10]  # a view: no new storage
        b = torch.empty(2048, dtype=torch.float16)  # 4 KiB
        assert tracker.live == 8192
        del a, view
        c = torch.empty(256, dtype=torch.float64)  # 2 KiB
    assert (tracker.live, tracker.peak) == (4096 + 2048, 8192)
    del b, c


@pytest.mark.parametrize(("name", "batch"), [("lesson02_vit_faces", 2), ("lesson04_facades_block", 1),
                                             ("lesson01_mlp_cats_dogs", 8)])
def test_fake_tensors_count_what_real_tensors_hold(name, batch):
    run = configs.recipe(name, "gpu")
    fake = costs.step_memory(run, amp="fp32", batch_size=batch, fake=True)
    real = costs.step_memory(run, amp="fp32", batch_size=batch, fake=False)
    assert abs(fake.peak - real.peak) <= 64 * 1024, (fake, real)  # a few small constants are made otherwise


@pytest.mark.parametrize(("name", "batch"), [("lesson02_vit_faces", 4), ("lesson01_mlp_cats_dogs", 16)])
def test_the_cpu_allocator_agrees_with_the_count(name, batch):
    """torch.profiler's allocation events on a real step: their running peak is the tracker's, less the temporaries
    freed within one operation (which the profiler nets out)."""
    run = configs.recipe(name, "gpu")
    counted = costs.step_memory(run, amp="fp32", batch_size=batch, fake=False)
    with use_attention("sdpa"):
        step = costs.recipe_step(run, batch, costs.training_mask(run, batch))
        imgs = torch.randn(step.shape)
        optimizer = make_optimizer(step.model, 1e-3, run.train.weight_decay, run.train.betas)

        def two_steps():
            for _ in range(2):
                step.loss_of(imgs).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        profiled = costs.profiler_peak(two_steps)
    before = counted.parameters + imgs.numel() * imgs.element_size()  # held before the step started
    assert 0.9 * (counted.peak - before) <= profiled <= 1.01 * (counted.peak - before), (profiled, counted)
