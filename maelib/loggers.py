"""Where training curves go besides the progress bar: TensorBoard or Weights & Biases.

``fit(..., logger=TensorBoardLogger("runs/lesson03"))`` calls ``logger.log(metrics, step)``
every ``log_every`` steps (``train/loss``, ``lr``) and after every epoch (``train/epoch_loss``,
``val/loss``, ``epoch_time``), then ``logger.flush()``. Closing the logger is the caller's job
(or use it as a context manager). A lesson logs reconstructions itself with ``log_images``.

Neither backend is a dependency of maelib: each is imported only when its logger is created.
"""

from __future__ import annotations

import os
from typing import Any

import torch


class Logger:
    """The interface ``fit`` uses. This base class logs nothing; subclasses override."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar ``metrics`` (name -> value) at global training ``step``."""

    def log_images(self, name: str, images: Any, step: int) -> None:
        """Record a matplotlib figure or an image tensor ``(C, H, W)`` / ``(B, C, H, W)`` in [0, 1]."""

    def flush(self) -> None:
        """Push buffered records to disk / the server."""

    def close(self) -> None:
        """Finish; the logger is not used afterwards."""

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_figure(obj: Any) -> bool:
    return hasattr(obj, "savefig")  # a matplotlib Figure, without importing matplotlib


def _image_grid(images: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` or ``(B, C, H, W)`` -> one ``(C, H, W)`` float image in [0, 1]."""
    images = images.detach().float().cpu()
    if images.ndim == 4:
        from torchvision.utils import make_grid

        images = make_grid(images, nrow=min(8, images.shape[0]), padding=2)
    if images.ndim != 3:
        raise ValueError(f"images must be (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
    return images.clamp(0, 1)  # reconstructions overshoot [0, 1] a little


class TensorBoardLogger(Logger):
    """Log to TensorBoard event files in ``log_dir`` (view with ``tensorboard --logdir runs``)."""

    def __init__(self, log_dir: str | os.PathLike, **writer_kwargs: Any):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoardLogger needs the tensorboard package: "
                              "pip install tensorboard") from e
        self.log_dir = str(log_dir)
        self.writer = SummaryWriter(log_dir=self.log_dir, **writer_kwargs)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_images(self, name: str, images: Any, step: int) -> None:
        if _is_figure(images):
            self.writer.add_figure(name, images, step, close=False)
        else:
            self.writer.add_image(name, _image_grid(torch.as_tensor(images)), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    """Log to Weights & Biases. ``mode="offline"`` (default) writes locally; sync later with
    ``wandb sync``. Other keywords (``name``, ``config``, ``dir``, ``tags``, ...) go to ``wandb.init``."""

    def __init__(self, project: str, mode: str = "offline", **init_kwargs: Any):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("WandbLogger needs the wandb package: pip install wandb "
                              "(or log with TensorBoardLogger, which needs only tensorboard)") from e
        self.wandb = wandb
        self.run = wandb.init(project=project, mode=mode, **init_kwargs)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_images(self, name: str, images: Any, step: int) -> None:
        if not _is_figure(images):
            images = _image_grid(torch.as_tensor(images)).permute(1, 2, 0).numpy()  # HWC for wandb
        self.run.log({name: self.wandb.Image(images)}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS = ("none", "tensorboard", "wandb")


def make_logger(tracking: str, run_name: str, settings: dict[str, Any] | None = None, *,
                folder: str | os.PathLike = "runs", project: str = "maelib") -> Logger:
    """The logger for one run: ``"none"`` (logs nothing), ``"tensorboard"`` or ``"wandb"``.

    TensorBoard writes to ``folder/tensorboard/run_name`` (the numeric ``settings`` as scalars at step 0);
    W&B runs offline unless ``WANDB_MODE`` says otherwise, in ``folder``, with ``settings`` as its config.
    """
    settings = settings or {}
    if tracking == "none":
        return Logger()
    if tracking == "tensorboard":
        logger = TensorBoardLogger(os.path.join(folder, "tensorboard", run_name))
        logger.log({f"settings/{k}": v for k, v in settings.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}, step=0)
        return logger
    if tracking == "wandb":
        return WandbLogger(project=project, mode=os.environ.get("WANDB_MODE", "offline"), name=run_name,
                           config=settings, dir=str(folder))
    raise ValueError(f"tracking must be one of {TRACKERS}, got {tracking!r}")
