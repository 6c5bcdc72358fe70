"""Command line: ``python -m maelib lessons ...`` and ``python -m maelib train ...`` (also the ``maelib`` command).

``maelib train --config NAME`` trains a named configuration (see :mod:`maelib.configs`) with the
same models, data, losses and :func:`maelib.train.fit` as the notebooks; flags override any of its
settings. Started by ``torchrun --nproc_per_node=N -m maelib train ...`` it trains on N processes
with DistributedDataParallel (see :mod:`maelib.distributed`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from . import course

TRAIN_HELP = "train a named configuration, on one device or many (torchrun); see maelib train --help"
TRAIN_EXAMPLES = """\
examples:
  maelib train --config lesson01_mlp_cats_dogs --preset cpu
  maelib train --config tiny --epochs 3 --out runs/try            # then: ... --resume to continue
  torchrun --nproc_per_node=8 -m maelib train --config paper_vit_base --data-folder /data/imagenet/train
  torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 \\
      -m maelib train --config paper_vit_base --data-folder /data/imagenet/train   (node_rank=1 on the other)

The learning rate is blr x global batch / 256, the global batch being --batch-size x processes x
--accum-steps (--lr sets it directly). Only rank 0 prints, logs and writes OUT/last.pt; --resume
continues from it (on several nodes OUT must be on a shared file system).

configurations:
"""

MASK_ARGS = ("mask_ratio", "block_ratio", "random_ratio", "flipped", "random_offset", "horizontal_random_offset")
RUN_ARGS = ("model", "dataset", "data_root", "data_folder", "img_size", "patch_size", "subset", "val_fraction",
            "test_fraction", "workers", "batch_size", "global_batch", "blr", "lr", "loss", "normalize_inputs",
            "init_from")
TRAIN_ARGS = ("epochs", "warmup_epochs", "weight_decay", "schedule", "grad_clip", "amp", "seed", "accum_steps",
              "log_every")


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from .configs import CONFIGS, DATASETS, LOSSES, describe
    from .masking import MASKINGS
    from .models import MODEL_CONFIGS
    from .optim import SCHEDULES
    from .precision import AMP_MODES

    p = sub.add_parser("train", help=TRAIN_HELP,
                       description="Train a lesson's model (or the paper's recipe) from a named configuration "
                                   "and preset; the flags below override its settings.",
                       epilog=TRAIN_EXAMPLES + describe(), formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to train")
    what.add_argument("--config", required=True, choices=sorted(CONFIGS), metavar="NAME",
                      help="named configuration (listed below)")
    what.add_argument("--preset", choices=["smoke", "cpu", "gpu"],
                      help="the configuration's size: smoke (seconds), cpu (the committed lesson run), gpu (the "
                           "full recipe); default: MAELIB_PRESET, else gpu with CUDA, else cpu")
    what.add_argument("--model", choices=sorted(MODEL_CONFIGS), metavar="NAME",
                      help="another model from maelib.models.MODEL_CONFIGS (the configuration's own sizes are "
                           "then dropped)")
    what.add_argument("--norm-pix-loss", action=argparse.BooleanOptionalAction, default=None,
                      help="predict per-patch normalised pixels (the paper's norm_pix_loss)")
    what.add_argument("--loss", choices=LOSSES,
                      help="mse: the masked MSE; combined: 0.6 masked MSE + 0.4 VGG19 perceptual (needs weights); "
                           "mse+ssim: masked MSE + 4 x (1 - SSIM of the paste-back)")
    what.add_argument("--init-from", metavar="RECIPE_OR_PT",
                      help="fine-tune: start from the trained model of this recipe (same preset; trained first if "
                           "missing) or from a maelib checkpoint file, instead of random weights")

    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS,
                   help="cats_dogs / faces / facades from the data root; folder (images) / npy (.npy arrays) / "
                        "imagefolder (class subfolders, decoded on the fly) from --data-folder")
    d.add_argument("--data-root", metavar="DIR",
                   help="data root for cats_dogs / faces / facades (default: MAELIB_DATA_DIR, else data/)")
    d.add_argument("--data-folder", metavar="DIR",
                   help="train on this folder instead (implies --dataset npy if it holds .npy files, else "
                        "folder, unless --dataset says otherwise)")
    d.add_argument("--img-size", type=int, metavar="PX", help="resize images to PX x PX")
    d.add_argument("--patch-size", type=int, metavar="PX", help="patch side in pixels (must divide --img-size)")
    d.add_argument("--subset", type=int, metavar="N", help="train on the first N training images only")
    d.add_argument("--val-fraction", type=float, metavar="F",
                   help="share of the images held out for validation (0: no validation)")
    d.add_argument("--test-fraction", type=float, metavar="F",
                   help="share of the images held out as a test set, never trained or validated on")
    d.add_argument("--no-augment", action="store_true", help="no random crops, flips or jitter")
    d.add_argument("--normalize-inputs", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise images with the training images' per-channel mean and std (written to "
                        "run.json), as the lessons do")
    d.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes per training process")

    m = p.add_argument_group("masking")
    m.add_argument("--mask-mode", choices=sorted(MASKINGS),
                   help="masking strategy (a new mode drops the configuration's mask arguments)")
    m.add_argument("--mask-ratio", type=float, metavar="F", help="random: share of patches masked")
    m.add_argument("--block-ratio", type=float, metavar="F",
                   help="block: share of patch rows masked; square / combined: share of patches in the square")
    m.add_argument("--random-ratio", type=float, metavar="F",
                   help="combined: share of the patches outside the square masked at random")
    m.add_argument("--flipped", action=argparse.BooleanOptionalAction, default=None,
                   help="block / square / combined: count rows from the bottom")
    m.add_argument("--random-offset", action=argparse.BooleanOptionalAction, default=None,
                   help="block / square / combined: move the block to a random row per image")
    m.add_argument("--horizontal-random-offset", action=argparse.BooleanOptionalAction, default=None,
                   help="square / combined: move the square to a random column per image")

    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, metavar="N", help="passes over the training data")
    o.add_argument("--warmup-epochs", type=float, metavar="N", help="linear learning-rate warmup (may be fractional)")
    o.add_argument("--batch-size", type=int, metavar="N", help="images per device per step")
    o.add_argument("--accum-steps", type=int, metavar="N",
                   help="gradient accumulation: batches per optimizer step (replaces --global-batch)")
    o.add_argument("--global-batch", type=int, metavar="N",
                   help="images per optimizer step over all processes; sets the accumulation steps")
    o.add_argument("--blr", type=float, metavar="LR", help="base learning rate: lr = blr x global batch / 256")
    o.add_argument("--lr", type=float, metavar="LR", help="absolute peak learning rate (ignores --blr)")
    o.add_argument("--weight-decay", type=float, metavar="W", help="AdamW weight decay")
    o.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule, stepped every optimizer step")
    o.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm to NORM")
    o.add_argument("--amp", choices=AMP_MODES, help="mixed precision (auto: bf16 on GPUs of compute capability >= 8.0, "
                                                    "fp16 below; bf16 on CPUs that have it natively; else off)")
    o.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    o.add_argument("--seed", type=int, metavar="N", help="seeds the split, the weights and every epoch's randomness")

    r = p.add_argument_group("output and devices")
    r.add_argument("--out", metavar="DIR", help="output folder for last.pt, run.json, TensorBoard logs "
                                                "(default: runs/<config>)")
    r.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt: weights, optimizer, scheduler, scaler, epoch (which sets "
                        "the sampler's order and every random number)")
    r.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard (rank 0)")
    r.add_argument("--log-every", type=int, metavar="N", help="update the progress bar every N optimizer steps")
    r.add_argument("--device", help="cuda, mps or cpu (default: the best available; under torchrun cuda:LOCAL_RANK "
                                    "with NCCL, or cpu with gloo)")
    r.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration and the model size, then stop (no data, no training)")


# --------------------------------------------------------------------------- from flags to a run
def _masking_from_args(masking: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    masking = dict(masking)
    if args.mask_mode is not None and args.mask_mode != masking.get("mask_mode", "random"):
        masking = {"mask_mode": args.mask_mode}  # the configuration's arguments belong to its own mode
    for key in MASK_ARGS:
        if getattr(args, key) is not None:
            masking[key] = getattr(args, key)
    if "mask_ratio" in masking and masking.get("mask_mode", "random") != "random":
        raise SystemExit("maelib train: --mask-ratio applies to --mask-mode random only")
    return masking


def _apply(run, changes: dict[str, Any], fields: tuple[str, ...]):
    """``configs.replace(run, **changes)``; a value the configuration refuses exits with its message, in which
    the names of ``fields`` become the flags that set them (``warmup_epochs`` -> ``--warmup-epochs``)."""
    from .configs import replace

    try:
        return replace(run, **changes)
    except ValueError as err:
        flags = {name: "--" + name.replace("_", "-") for name in fields}
        message = re.sub(r"\b\w+\b", lambda word: flags.get(word.group(), word.group()), str(err))
        raise SystemExit(f"maelib train: {message}") from err


def resolve_run(args: argparse.Namespace):
    """The configuration named by ``args.config`` with every flag that was given applied."""
    from .configs import get_config, replace

    run = get_config(args.config, args.preset)
    changes = {k: getattr(args, k) for k in RUN_ARGS + TRAIN_ARGS if getattr(args, k) is not None}
    if args.model is not None and args.model != run.model:
        changes["model_kwargs"] = {}  # the configuration's sizes were meant for its own model
    if args.data_folder is not None and args.dataset is None and run.dataset not in ("folder", "npy",
                                                                                      "imagefolder"):
        changes["dataset"] = "npy" if any(Path(args.data_folder).glob("*.npy")) else "folder"
    if changes.get("dataset", run.dataset) != run.dataset:
        changes["data_kwargs"] = {}  # the configuration's data settings (a faces variant, ...) were for its own data
    if args.accum_steps is not None and args.global_batch is not None:
        raise SystemExit("maelib train: give --accum-steps or --global-batch, not both")
    if args.accum_steps is not None:
        changes["global_batch"] = None  # explicit accumulation replaces the configuration's global batch
    if args.compile:
        changes["compile"] = True
    if args.no_augment:
        changes["augment"] = None
    # the training settings first: TrainConfig's own lr is worked out later, it is not --lr's
    run = _apply(run, {k: v for k, v in changes.items() if k in TRAIN_ARGS}, TRAIN_ARGS)
    run = _apply(run, {k: v for k, v in changes.items() if k not in TRAIN_ARGS}, RUN_ARGS)
    if args.norm_pix_loss is not None:
        run = replace(run, model_kwargs={**run.model_kwargs, "norm_pix_loss": args.norm_pix_loss})
    return replace(run, masking=_masking_from_args(run.train.masking, args))


def _check_patches(run) -> None:
    """Exit unless ``run.img_size`` splits into whole patches: now, not after minutes of decoding images."""
    from .models import MODEL_CONFIGS
    from .patches import check_patch_size

    own = inspect.signature(MODEL_CONFIGS[run.model]).parameters["patch_size"].default  # the model's default
    # as runs.build_model decides: the model's own, replaced by --patch-size, replaced by the recipe's model_kwargs
    patch = run.model_kwargs.get("patch_size", run.patch_size if run.patch_size is not None else own)
    if run.img_size < 1 or patch < 1:
        raise SystemExit(f"maelib train: --img-size and --patch-size must be >= 1 pixel, got {run.img_size} and "
                         f"{patch}")
    try:
        check_patch_size(run.img_size, run.img_size, patch)
    except ValueError as err:
        whose = "" if run.patch_size is not None else f" (model {run.model}'s own)"
        nearest = max(patch, round(run.img_size / patch) * patch)
        raise SystemExit(f"maelib train: --img-size {run.img_size} is not a whole number of patches of --patch-size "
                         f"{patch}{whose}; pass an --img-size that is a multiple of {patch} (e.g. {nearest}), or a "
                         f"--patch-size that divides {run.img_size}") from err


def _resume_point(last: Path) -> tuple[int, int | None]:
    """``(epochs done, epochs of the run that wrote it)`` from ``last.pt``, memory-mapped (the weights are not read)."""
    import torch

    from .checkpoint import CheckpointError, read_checkpoint

    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # damaged, foreign or an old format: read_checkpoint says which
        try:
            checkpoint = read_checkpoint(last, "cpu")
        except CheckpointError as err:
            raise SystemExit(f"maelib train: {err}") from err
    return checkpoint["epoch"], (checkpoint.get("config") or {}).get("epochs")


def _check_batch(run, images: int, world: int, accum: int, global_batch: int) -> None:
    """Exit if one optimizer step asks for more images than there are to train on: the learning rate would be
    scaled for a batch that no step sees."""
    if global_batch <= images:
        return
    rate = f"the learning rate would be scaled for {global_batch} images while no step sees more than {images}"
    if run.batch_size * world > images:
        per = f" x {world} processes" if world > 1 else ""
        raise SystemExit(f"maelib train: --batch-size {run.batch_size}{per} is more than the {images} training images: "
                         f"{rate}; pass --batch-size {max(1, images // world)} or less")
    raise SystemExit(f"maelib train: --batch-size {run.batch_size} x {world} process{'es' if world > 1 else ''} x "
                     f"{accum} accumulation steps = {global_batch} images per optimizer step is more than the "
                     f"{images} training images: {rate}; pass fewer --accum-steps, or a --global-batch of at most "
                     f"{images}")


def _say(*lines: str) -> None:
    from .distributed import is_main

    if is_main():
        print("\n".join(lines), flush=True)


def train(args: argparse.Namespace):
    """``maelib train``: returns ``(model, history)``. Under torchrun every process runs this."""
    import dataclasses

    import torch

    from . import configs, distributed, runs
    from .loggers import TensorBoardLogger
    from .presets import current_preset
    from .train import fit, make_loader

    device = distributed.setup(args.device)
    try:
        run = resolve_run(args)
        world, main = distributed.world_size(), distributed.is_main()
        try:
            accum, global_batch = configs.batch_plan(run, world)
        except ValueError as err:
            raise SystemExit(f"maelib train: {err}") from err
        lr = configs.learning_rate(run, global_batch)
        out = Path(args.out) if args.out else Path("runs") / run.name
        last = out / "last.pt"
        if last.exists() and not args.resume:
            raise SystemExit(f"maelib train: {last} exists; pass --resume to continue that run, or another --out")
        try:
            runs.check_loss(run)  # before minutes of loading data
        except FileNotFoundError as err:
            raise SystemExit(f"maelib train: {err}") from err
        _check_patches(run)
        start, planned, epochs = 0, None, run.train.epochs
        if args.resume and last.exists():
            start, planned = _resume_point(last)
            if start >= epochs:
                done = f"{start} of {epochs} epochs" if start == epochs else \
                    f"{start} epochs, more than --epochs {epochs}"
                _say(f"maelib train: nothing to do: {last} already has {done}; pass --epochs M with M > {start} to "
                     "train longer")
                raise SystemExit(0)

        torch.manual_seed(run.train.seed)  # the same initial weights everywhere (DDP also copies rank 0's)
        with distributed.main_first():  # rank 0 of each node downloads and decodes first, the others reuse it
            parts = runs.load_data(run, progress=main) if not args.dry_run else None
        train_set, val_set = (parts.train, parts.val) if parts is not None else (None, None)
        if train_set is not None:
            _check_batch(run, len(train_set), world, accum, global_batch)
        normalizer = parts.normalizer if parts is not None else None
        model = runs.build_model(run, **(parts.from_data if parts is not None else {}))
        channels = model.in_chans
        try:  # a mask that does not fit the model's patch grid fails now, not after the data is loaded
            model.make_mask(torch.zeros(1, channels, run.img_size, run.img_size), **run.train.masking)
        except (TypeError, ValueError) as err:
            raise SystemExit(f"maelib train: masking {run.train.masking} does not work here: {err}") from err
        config = dataclasses.replace(run.train, lr=lr, accum_steps=accum, checkpoint_dir=out, resume=args.resume,
                                     progress=main)
        rise = "rising over the first 30% of steps" if config.schedule == "onecycle" and not config.warmup_epochs \
            else f"warmup {config.warmup_epochs:g} epochs"
        how = f"{config.schedule} ({rise}), {config.epochs} epochs"
        rate = f"lr {lr:.3g}" if run.lr is not None else f"lr = blr {run.blr:.3g} x {global_batch} / 256 = {lr:.3g}"
        backend = f"{torch.distributed.get_backend()}, {world} processes" if world > 1 else "1 process"
        _say(f"maelib train: {run.name} (preset {args.preset or current_preset()})",
             f"  model   {run.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
             f"{run.img_size} px, patch {model.patch_size}, {channels} channels, loss {run.loss}"
             f"{' (norm_pix)' if model.norm_pix_loss else ''}",
             f"  data    {run.dataset}" + (f": {len(train_set)} training images, "
                                           f"{len(val_set) if val_set is not None else 0} validation images"
                                           if train_set is not None else ""),
             "  inputs  " + ("pixels in [0, 1]" if not run.normalize_inputs else
                              "standardised per channel with the training images' mean and std" +
                              (f" {[round(m, 3) for m in normalizer.mean]}, {[round(v, 3) for v in normalizer.std]}"
                               if normalizer is not None else "")),
             f"  masks   {run.train.masking}",
             f"  batch   {run.batch_size} per process x {world} process{'es' if world > 1 else ''} x {accum} "
             f"accumulation step{'s' if accum > 1 else ''} = {global_batch} images per optimizer step",
             f"  optim   AdamW, {rate}, weight decay {config.weight_decay}, betas {config.betas}, {how}",
             f"  device  {device} ({backend})",
             f"  output  {out}")
        if args.dry_run:
            return model, {}

        if run.init_from and not (args.resume and last.exists()):  # fine-tuning (a resumed run has its own weights)
            try:
                runs.start_from(run, model, normalizer, progress=main, train_missing=world == 1, device=device)
            except (FileNotFoundError, ValueError) as err:
                raise SystemExit(f"maelib train: {err}") from err
            _say(f"  start   from {run.init_from}")
        loss_fn = runs.build_loss(run, model, device, normalizer)
        train_loader = make_loader(train_set, run.batch_size, shuffle=True, seed=run.train.seed,
                                   num_workers=run.workers, distributed=True)
        val_loader = make_loader(val_set, run.val_batch_size, shuffle=False, num_workers=run.workers) \
            if val_set is not None else None
        if args.resume and last.exists():
            _say(f"  resume  from {last}, {start} of {config.epochs} epochs done")
            if planned is not None and planned != epochs and config.schedule != "constant":
                _say(f"  note    {last} comes from a run with --epochs {planned}: the {config.schedule} schedule is "
                     f"{'stretched' if epochs > planned else 'shortened'} to {epochs} epochs from the current step "
                     f"on, so the result differs from a run started with --epochs {epochs}")
        elif args.resume:
            _say(f"  resume  nothing to resume at {last}: starting from epoch 1")
        if main:
            out.mkdir(parents=True, exist_ok=True)
            record = {"config": configs.as_dict(run), "argv": sys.argv, "world_size": world, "accum_steps": accum,
                      "global_batch": global_batch, "lr": lr, "device": str(device)}
            if normalizer is not None:  # the model sees (image - mean) / std: keep the numbers to undo it
                record["normalizer"] = {"mean": list(normalizer.mean), "std": list(normalizer.std)}
            (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
        logger = TensorBoardLogger(out / "tensorboard") if args.tensorboard and main else None
        try:
            history = fit(model, train_loader, val_loader, config, loss_fn=loss_fn, device=device, logger=logger,
                          normalizer=normalizer, recipe=runs.recipe_record(run))
        finally:
            if logger is not None:
                logger.close()

        seconds = sum(history["epoch_time"][start:])
        if seconds > 0 and len(history["epoch"]) > start:
            images = (len(history["epoch"]) - start) * len(train_set)
            val = f", val loss {history['val_loss'][-1]:.4f}" if val_loader is not None else ""
            _say(f"done: train loss {history['train_loss'][-1]:.4f}{val}; {images / seconds:.1f} images/s over "
                 f"{len(history['epoch']) - start} epochs ({backend}"
                 f"{', validation included' if val_loader is not None else ''}); checkpoint {last}")
        return model, history
    finally:
        distributed.cleanup()


# --------------------------------------------------------------------------- main
def make_parser(with_train: bool = True) -> argparse.ArgumentParser:
    """The ``maelib`` parser; ``with_train=False`` leaves out the train command's flags (they import torch)."""
    parser = argparse.ArgumentParser(prog="maelib", description="Masked Autoencoders, taught by running them.")
    sub = parser.add_subparsers(dest="command", required=True)

    lessons = sub.add_parser("lessons", help="list, run or re-link the course's notebooks")
    lsub = lessons.add_subparsers(dest="action", required=True)
    lsub.add_parser("list", help="list the lessons")
    run = lsub.add_parser("run", help="execute lessons top to bottom into rendered copies")
    run.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    run.add_argument("--preset", choices=["smoke", "cpu", "gpu"], help="default: MAELIB_PRESET or by device")
    run.add_argument("--out", default=None, help="folder for rendered copies (default: runs/notebooks)")
    run.add_argument("--inplace", action="store_true", help="overwrite the notebooks (to commit a new run)")
    run.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    lsub.add_parser("sync-urls", help="rewrite Colab badges and install cells from pyproject.toml")
    predict = lsub.add_parser("predict", help="a T4's time per lesson, from FLOPs counted in capped gpu-preset runs",
                              description="Runs the lessons under the gpu preset with the step cap (as CI does, on "
                                          "this CPU), then prints each lesson's counted FLOPs and predicted minutes "
                                          "on a Colab T4; see maelib/predict.py for how.")
    predict.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    predict.add_argument("--rendered", action="store_true",
                         help="read the capped runs in runs/notebooks-gpu-capped/ instead of running the lessons")
    predict.add_argument("--memory", action="store_true",
                         help="print instead each recipe's peak memory for one gpu-preset training step")
    release = lsub.add_parser("release", help="build the student versions (no solutions) with nbgrader",
                              description="Student versions of the lessons, made by nbgrader's generate_assignment: "
                                          "solutions replaced by `raise NotImplementedError()`, outputs cleared, "
                                          "autograded test cells locked. OUT becomes an nbgrader course folder "
                                          "(source/, release/, gradebook.db); see docs/TEACHING.md.")
    release.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    release.add_argument("--out", default=None, help="the course folder (default: release/, not committed)")
    if with_train:
        add_train_parser(sub)
    else:
        sub.add_parser("train", help=TRAIN_HELP, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `maelib lessons ...` starts fast: only `maelib train` imports torch to build its flags
    parser = make_parser(with_train=argv[:1] == ["train"])
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
    elif args.command == "lessons":
        if args.action == "list":
            for path in course.lesson_paths():
                print(path.name)
        elif args.action == "run":
            try:
                results = course.run_lessons(args.lessons, preset=args.preset, out_dir=args.out,
                                             inplace=args.inplace, timeout=args.timeout,
                                             echo=lambda line: print(line, flush=True))
            except course.LessonFailed as err:
                print(f"maelib lessons run: {err}", file=sys.stderr)
                return 1
            for path, seconds in results:
                print(f"{path.name}: {seconds / 60:.1f} min")
        elif args.action == "predict":
            from . import predict

            try:
                print(predict.memory_table() if args.memory else
                      predict.predict_lessons(args.lessons, rendered=args.rendered,
                                              echo=lambda line: print(line, flush=True)))
            except (course.LessonFailed, FileNotFoundError) as err:
                print(f"maelib lessons predict: {err}", file=sys.stderr)
                return 1
        elif args.action == "release":
            try:
                course.release_lessons(args.lessons, out_dir=args.out, echo=lambda line: print(line, flush=True))
            except course.ReleaseFailed as err:
                print(f"maelib lessons release: {err}", file=sys.stderr)
                return 1
        elif args.action == "sync-urls":
            for path in course.sync_urls():
                print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
