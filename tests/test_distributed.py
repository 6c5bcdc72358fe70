"""`maelib train` in two processes (gloo on CPU, as torchrun would start them): the copies stay
identical, match one process with the same global batch, and resume exactly after a failure.

Two worker processes are started once; each runs the same command several times, as
`torchrun --nproc_per_node=2 -m maelib train ...` would, and saves what it ended with. They are
forked, as DataLoader workers are (one thread each, no process group in the parent), so they do
not import torch again: that saves most of this file's time on a 2-core machine.

Masks are blocks (no randomness) and there is no augmentation, so one process with batch 8 must
see exactly the images and masks that two processes with batch 4 each see.
"""

import contextlib
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from maelib.__main__ import make_parser, resolve_run, train
from maelib.runs import build_model

# 32 images: 24 train + 8 val; 3 optimizer steps per epoch at a global batch of 8
COMMON = ["train", "--config", "tiny", "--preset", "smoke", "--img-size", "16", "--patch-size", "4",
          "--no-augment", "--val-fraction", "0.25", "--mask-mode", "block", "--block-ratio", "0.5",
          "--epochs", "3", "--blr", "0.064", "--warmup-epochs", "0.5", "--amp", "off", "--device", "cpu"]
RUNS = ("plain", "accum", "resumed")  # what each worker saves; "crash" fails on purpose


def write_npy_folder(folder: Path, n: int = 32, size: int = 16) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(folder / "images.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, ports: list[int], data: str, out: str) -> None:
    """One of the two processes: the environment torchrun would give it, then four runs."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    import maelib.train
    from maelib.models import MaskedAutoencoderViT

    out, saved, unsynced = Path(out), [], []
    real_save, real_no_sync = maelib.train.save_checkpoint, maelib.train.DistributedDataParallel.no_sync

    def counting_save(*args, **kwargs):
        saved.append(kwargs["epoch"])
        return real_save(*args, **kwargs)

    def counting_no_sync(self):
        unsynced.append(1)
        return real_no_sync(self)

    maelib.train.save_checkpoint = counting_save
    maelib.train.DistributedDataParallel.no_sync = counting_no_sync

    def run(name: str, port: int, extra: list[str]) -> None:
        os.environ["MASTER_PORT"] = str(port)
        saved.clear(), unsynced.clear()
        with open(out / f"{name}.rank{rank}.log", "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            model, history = train(make_parser().parse_args([*COMMON, "--data-folder", data, *extra]))
        torch.save({"model": model.state_dict(), "history": history, "saved": list(saved),
                    "unsynced": len(unsynced)},
                   out / f"{name}.rank{rank}.pt")

    run("plain", ports[0], ["--batch-size", "4", "--out", str(out / "plain")])
    run("accum", ports[1], ["--batch-size", "2", "--accum-steps", "2", "--out", str(out / "accum")])

    # An injected failure in both processes: the 2nd training step of epoch 3 (after 2 checkpoints).
    real_forward, calls = MaskedAutoencoderViT.forward, 0

    def failing_forward(self, *args, **kwargs):
        nonlocal calls
        calls += self.training
        if calls == 2 * 3 + 2:
            raise RuntimeError("simulated failure")
        return real_forward(self, *args, **kwargs)

    MaskedAutoencoderViT.forward = failing_forward
    try:
        run("crash", ports[2], ["--batch-size", "4", "--out", str(out / "crash")])
    except RuntimeError as err:
        assert "simulated failure" in str(err)
    finally:
        MaskedAutoencoderViT.forward = real_forward
    run("resumed", ports[3], ["--batch-size", "4", "--out", str(out / "crash"), "--resume"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start the two workers once; return ``{name: [rank 0 result, rank 1 result]}`` and the folder."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = write_npy_folder(tmp / "data")
    ports = [free_port() for _ in range(4)]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    context = mp.start_processes(_worker, args=(2, ports, str(data), str(tmp)), nprocs=2, join=False,
                                 start_method=method)
    deadline = time.monotonic() + 240
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two training processes did not finish in 240 s (a hang in a collective?)")
    results = {name: [torch.load(tmp / f"{name}.rank{r}.pt", weights_only=False) for r in (0, 1)]
               for name in RUNS}
    return results, tmp


def single_process_run(tmp: Path, *extra: str):
    return train(make_parser().parse_args([*COMMON, "--data-folder", str(tmp / "data"), *extra]))


def test_both_processes_end_with_identical_parameters(runs):
    results, tmp = runs
    assert json.loads((tmp / "plain" / "run.json").read_text())["world_size"] == 2
    for name in RUNS:
        rank0, rank1 = (r["model"] for r in results[name])
        assert rank0.keys() == rank1.keys()
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), name
        assert results[name][0]["history"]["train_loss"] == results[name][1]["history"]["train_loss"]


def without_key_bias(state: dict) -> dict:
    """The weights, with the key part of every attention bias zeroed.

    A key bias adds the same number to all of a query's attention scores, so softmax cancels it:
    its true gradient is 0, and AdamW turns the float noise of that 0 into steps of size lr whose
    sign depends on summation order. It cannot change any output; compare everything else.
    """
    state = {k: v.clone() for k, v in state.items()}
    for key, value in state.items():
        if key.endswith("attn.qkv.bias"):
            third = value.shape[0] // 3
            value[third:2 * third] = 0
    return state


def test_two_processes_equal_one_process_with_the_same_global_batch(runs):
    results, tmp = runs
    model, history = single_process_run(tmp, "--batch-size", "8", "--out", str(tmp / "single"))
    single = model.state_dict()
    torch.manual_seed(0)  # what train() starts from
    initial = build_model(resolve_run(make_parser().parse_args([*COMMON, "--data-folder", "x"]))).state_dict()
    imgs = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        pred = model(imgs, mask_mode="block", block_ratio=0.5)[1]
    for name in ("plain", "accum"):  # 2 x 4, and 2 x 2 x 2 accumulation steps
        ddp = results[name][0]
        expected, got = without_key_bias(single), without_key_bias(ddp["model"])
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6)
        model.load_state_dict(ddp["model"])
        with torch.no_grad():  # the same reconstructions, key biases and all
            torch.testing.assert_close(model(imgs, mask_mode="block", block_ratio=0.5)[1], pred,
                                       rtol=1e-4, atol=1e-5)
        assert ddp["history"]["train_loss"] == pytest.approx(history["train_loss"], rel=1e-5)
        assert ddp["history"]["val_loss"] == pytest.approx(history["val_loss"], rel=1e-5)
    # training moved the weights far more than the tolerance
    assert max((single[k] - initial[k]).abs().max().item() for k in single) > 1e-3


def test_accumulation_averages_gradients_once_per_optimizer_step(runs):
    results, _ = runs
    # 3 epochs x 3 optimizer steps of 2 batches: the first batch of each step skips DDP's all-reduce
    assert [r["unsynced"] for r in results["accum"]] == [9, 9]
    assert [r["unsynced"] for r in results["plain"]] == [0, 0]


def test_a_failed_distributed_run_resumes_to_the_same_parameters(runs):
    results, tmp = runs
    checkpoint = torch.load(tmp / "crash" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["world_size"] == 2
    resumed, plain = results["resumed"][0], results["plain"][0]
    assert resumed["history"]["train_loss"] == plain["history"]["train_loss"]
    assert all(torch.equal(resumed["model"][k], plain["model"][k]) for k in plain["model"])


def test_only_rank_0_reports_and_writes_checkpoints(runs):
    results, tmp = runs
    assert results["plain"][0]["saved"] == [1, 2, 3] and results["plain"][1]["saved"] == []
    assert results["resumed"][0]["saved"] == [3] and results["resumed"][1]["saved"] == []
    rank0, rank1 = ((tmp / f"plain.rank{r}.log").read_text() for r in (0, 1))
    assert "maelib train: tiny" in rank0 and "epoch 3/3" in rank0 and "images/s" in rank0
    assert "maelib train" not in rank1 and "epoch 1/3" not in rank1 and "step/s" not in rank1
