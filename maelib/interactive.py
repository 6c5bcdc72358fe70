"""Play with a trained MAE: hide patches with the mouse and watch what the model believes is behind them.

Lesson 07's widget, in two layers:

* **The logic**, plain functions on tensors, tested without a browser: which patch is under the
  pointer (:func:`patch_at`, :func:`stroke_patches`), mask edits (:func:`edit_mask`,
  :func:`preset_mask`), one update of the views (:func:`update`: the reconstruction, the
  paste-back, masked PSNR and the classical baselines' PSNR on the same mask), the decoder's
  attention from one masked patch (:func:`attention_from`), and the pictures (:func:`to_png`,
  :func:`attention_picture`).
* **The widget**, :class:`Playground`: ipywidgets controls around :class:`MaskCanvas`, a small
  anywidget canvas that only draws the image with its mask and sends the pointer's positions (in
  image pixels) back to Python. Every decision is made in Python by the functions above, so what
  the canvas does and what a script does (``playground.stroke(points)``) are the same code.

A mask here is a ``(N,)`` bool tensor over the model's patch grid in raster order, True = hidden.
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import anywidget
import ipywidgets as w
import numpy as np
import torch
import traitlets
from PIL import Image

from . import metrics
from .data.decode import decode_image
from .labels import method_label
from .masking import Mask, block_masking, mask_from_flags, random_masking, square_block_masking
from .normalize import PixelNormalizer
from .patches import paste_back, patch_mask_to_pixels

Grid = tuple[int, int]  # (rows, cols) of patches
PRESETS = ("random", "band", "square", "clear")
TOOLS = ("paint", "erase", "inspect")


# --------------------------------------------------------------------------- where the pointer is
def patch_at(x: float, y: float, grid: Grid, patch_size: int) -> int | None:
    """The patch (raster index) under the image pixel ``(x, y)`` (x to the right, y down); None outside."""
    rows, cols = grid
    if not (0 <= x < cols * patch_size and 0 <= y < rows * patch_size):
        return None
    return int(y // patch_size) * cols + int(x // patch_size)


def stroke_patches(points: Sequence[Sequence[float]], grid: Grid, patch_size: int) -> list[int]:
    """Every patch a stroke through ``points`` (image pixels) passes over, in order, each once.

    A fast pointer reports points far apart; the straight line between two of them is sampled every
    quarter of a patch, so the stroke leaves no gap. Points outside the image are skipped.
    """
    seen: dict[int, None] = {}  # insertion-ordered set
    for i, (x1, y1) in enumerate(points):
        x0, y0 = points[i - 1] if i else (x1, y1)
        steps = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / (patch_size / 4)))
        for k in range(steps + 1):
            patch = patch_at(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps, grid, patch_size)
            if patch is not None:
                seen.setdefault(patch, None)
    return list(seen)


# --------------------------------------------------------------------------- mask edits
def edit_mask(masked: torch.Tensor, patches: Iterable[int], *, hide: bool) -> torch.Tensor:
    """A copy of ``masked`` with ``patches`` hidden (``hide=True``) or shown again.

    Raises ``ValueError`` for a patch outside the grid, and when the edit would hide every patch:
    the encoder needs at least one visible patch to read.
    """
    out = masked.clone()
    idx = list(patches)
    if bad := [p for p in idx if not 0 <= p < len(out)]:
        raise ValueError(f"patches {bad} are outside the grid of {len(out)} patches (0 to {len(out) - 1})")
    out[idx] = hide
    if bool(out.all()):
        raise ValueError("that would hide every patch; the encoder needs at least one visible patch")
    return out


def preset_mask(kind: str, grid: Grid, ratio: float, seed: int = 0) -> torch.Tensor:
    """A ready-made mask: ``random`` (``ratio`` of the patches), ``band`` (``ratio`` of the rows, at a
    random height), ``square`` (``ratio`` of the patches, at a random place) or ``clear`` (nothing).

    ``seed`` picks the random patches or place; the masks come from :mod:`maelib.masking`.
    """
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        mask = random_masking(1, grid, ratio, generator=gen)
    elif kind == "band":
        mask = block_masking(1, grid, ratio, random_offset=True, generator=gen)
    elif kind == "square":
        mask = square_block_masking(1, grid, ratio, generator=gen)
    elif kind == "clear":
        return torch.zeros(grid[0] * grid[1], dtype=torch.bool)
    else:
        raise ValueError(f"unknown mask preset {kind!r}; choose one of {PRESETS}")
    return mask.mask[0] > 0.5


def as_mask(masked: torch.Tensor) -> Mask:
    """A ``(N,)`` bool mask -> a one-image :class:`~maelib.masking.Mask` for the model."""
    if masked.ndim != 1 or masked.dtype != torch.bool:
        raise ValueError(f"masked must be a (N,) bool tensor, got {masked.dtype} of shape {tuple(masked.shape)}")
    return mask_from_flags(masked[None])


# --------------------------------------------------------------------------- one update
@dataclass
class Update:
    """What the views show for one image and mask.

    Attributes:
        recon: ``(C, H, W)`` the model's raw output in [0, 1] (every patch is the model's).
        pasted: ``(C, H, W)`` the paste-back: the model's pixels where hidden, the true ones elsewhere.
        model_psnr: masked PSNR (dB) of the model on the hidden pixels; None when nothing is hidden.
        baseline_psnr: masked PSNR of each classical baseline (:data:`maelib.metrics.BASELINES`).
    """

    recon: torch.Tensor
    pasted: torch.Tensor
    model_psnr: float | None
    baseline_psnr: dict[str, float] = field(default_factory=dict)

    @property
    def best_baseline(self) -> tuple[str, float] | None:
        """``(name, PSNR)`` of the best classical baseline on this mask, or None."""
        if not self.baseline_psnr:
            return None
        return max(self.baseline_psnr.items(), key=lambda item: item[1])


def _check_image(model: torch.nn.Module, image: torch.Tensor) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be one (C, H, W) image in [0, 1], got shape {tuple(image.shape)}")
    model.check_inputs(image[None])


def update(model: torch.nn.Module, image: torch.Tensor, masked: torch.Tensor, *,
           normalizer: PixelNormalizer | None = None,
           baselines: Iterable[str] = tuple(metrics.BASELINES)) -> Update:
    """Reconstruct ``image`` ``(C, H, W)`` (pixels in [0, 1]) under ``masked`` and score it.

    ``normalizer``: the one the model was trained with (its checkpoint has it). The baselines fill
    the same hidden pixels; their names are keys of :data:`maelib.metrics.BASELINES`.
    """
    _check_image(model, image)
    imgs = image[None].float()
    mask = as_mask(masked.cpu())
    recon = model.reconstruct(imgs, mask, normalizer=normalizer).clamp(0, 1)
    pixels = patch_mask_to_pixels(mask.mask, model.patch_size, model.grid_size)
    pasted = paste_back(recon, imgs, pixels)
    if not bool(masked.any()):
        return Update(recon[0], pasted[0], None)
    scores = {}
    for name in baselines:
        if name not in metrics.BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {list(metrics.BASELINES)}")
        scores[name] = float(metrics.masked_psnr(metrics.BASELINES[name](imgs, pixels), imgs, pixels))
    return Update(recon[0], pasted[0], float(metrics.masked_psnr(pasted, imgs, pixels)), scores)


# --------------------------------------------------------------------------- what the decoder reads
@dataclass
class AttentionMap:
    """The decoder's attention from one hidden patch's mask token.

    Attributes:
        patch: the hidden patch (raster index) whose token is the query.
        weights: ``(rows, cols)``: the share of its attention on each patch's token, averaged over
            the heads (and the blocks, unless one was chosen); with ``cls`` they sum to 1.
        cls: the share on the cls token.
    """

    patch: int
    weights: torch.Tensor
    cls: float

    def visible_share(self, masked: torch.Tensor) -> float:
        """How much of the attention went to visible patches (the evidence); the rest is on mask tokens."""
        return float(self.weights.flatten()[~masked.cpu()].sum())

    def mean_distance(self, masked: torch.Tensor) -> tuple[float, float]:
        """``(read, uniform)``: the mean distance, in patches, from the query to the visible patches,
        weighted by its attention to them (``read``) and with every visible patch alike (``uniform``).
        ``read`` well below ``uniform`` means the decoder fills a patch mostly from its neighbours."""
        rows, cols = self.weights.shape
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        qr, qc = divmod(self.patch, cols)
        dist = ((r - qr) ** 2 + (c - qc) ** 2).float().sqrt().flatten()
        visible = ~masked.cpu()
        if not bool(visible.any()):
            raise ValueError("no patch is visible: there is no evidence to measure a distance to")
        weights = self.weights.flatten()[visible]
        read = float((weights * dist[visible]).sum() / weights.sum().clamp_min(1e-12))
        return read, float(dist[visible].mean())


def attention_from(model: torch.nn.Module, image: torch.Tensor, masked: torch.Tensor, patch: int, *,
                   normalizer: PixelNormalizer | None = None, block: int | None = None) -> AttentionMap:
    """Where the decoder looks to fill hidden ``patch``: its mask token's attention over every token.

    Uses the model's own weights (``model.decoder_attention``, the attention of each decoder block
    in one eval forward pass). ``block``: one decoder block (0 = first, -1 = last); None averages them.
    """
    if not 0 <= patch < len(masked):
        raise ValueError(f"patch {patch} is outside the grid of {len(masked)} patches")
    if not bool(masked[patch]):
        raise ValueError(f"patch {patch} is visible; pick a hidden (grey) patch to see what fills it")
    return _attention_rows(model, image, masked, [patch], normalizer, block)[0]


def attention_maps(model: torch.nn.Module, image: torch.Tensor, masked: torch.Tensor, *,
                   normalizer: PixelNormalizer | None = None, block: int | None = None) -> list[AttentionMap]:
    """:func:`attention_from` for every hidden patch, in order, from one forward pass (not one per patch)."""
    return _attention_rows(model, image, masked, masked.nonzero().flatten().tolist(), normalizer, block)


def _attention_rows(model: torch.nn.Module, image: torch.Tensor, masked: torch.Tensor, patches: list[int],
                    normalizer: PixelNormalizer | None, block: int | None) -> list[AttentionMap]:
    if not hasattr(model, "decoder_attention"):
        raise TypeError(f"{type(model).__name__} has no decoder attention; use a ViT masked autoencoder")
    _check_image(model, image)
    device = next(model.parameters()).device
    x = image[None].float()
    x = (normalizer(x) if normalizer is not None else x).to(device)
    attn = model.decoder_attention(x, as_mask(masked.cpu()).to(device))  # (blocks, 1, heads, 1 + N, 1 + N)
    attn = attn[:, 0].mean(dim=1)  # (blocks, 1 + N, 1 + N): mean over heads
    attn = (attn.mean(dim=0) if block is None else attn[block]).cpu()
    # token 0 is cls; token 1 + i is patch i
    return [AttentionMap(patch, attn[1 + patch, 1:].reshape(model.grid_size), float(attn[1 + patch, 0]))
            for patch in patches]


# --------------------------------------------------------------------------- pictures
def _rgb(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8 (grey images repeated over the channels)."""
    arr = image.detach().float().cpu().clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy()
    return np.rint(arr * 255).astype(np.uint8)


def to_png(picture: torch.Tensor | np.ndarray, size: int | None = None) -> bytes:
    """A ``(C, H, W)`` image in [0, 1] (or an ``(H, W, 3)`` uint8 array) as PNG bytes, its width
    enlarged to ``size`` pixels with hard pixel edges (None: as it is)."""
    arr = _rgb(picture) if isinstance(picture, torch.Tensor) else picture
    img = Image.fromarray(arr)
    if size is not None and size != img.width:
        img = img.resize((size, round(size * img.height / img.width)), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast: the pictures change on every edit
    return buf.getvalue()


def attention_picture(image: torch.Tensor, masked: torch.Tensor, attention: AttentionMap,
                      patch_size: int, colormap: str = "inferno") -> np.ndarray:
    """``(H, W, 3)`` uint8: the image faded to grey, the visible patches tinted by how much attention
    they got (brightest = most), the hidden ones dark, the query patch outlined in yellow."""
    from matplotlib import colormaps

    rows, cols = attention.weights.shape
    weights = attention.weights.clone()
    hidden = masked.cpu().reshape(rows, cols)
    weights[hidden] = 0
    heat = colormaps[colormap]((weights / weights.max().clamp_min(1e-12)).numpy())[..., :3]  # (rows, cols, 3)
    heat = heat.repeat(patch_size, axis=0).repeat(patch_size, axis=1)
    grey = _rgb(image).mean(axis=2, keepdims=True) / 255
    out = 0.35 * grey + 0.65 * heat
    out[np.repeat(np.repeat(hidden.numpy(), patch_size, 0), patch_size, 1)] = 0.12
    r, c = divmod(attention.patch, cols)
    top, left = r * patch_size, c * patch_size
    out[top:top + patch_size, left:left + patch_size] = 0.12
    out[top:top + patch_size, [left, left + patch_size - 1]] = (1.0, 0.85, 0.0)  # the query's outline
    out[[top, top + patch_size - 1], left:left + patch_size] = (1.0, 0.85, 0.0)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def upload_to_image(content: bytes, size: tuple[int, int], channels: int) -> torch.Tensor:
    """An uploaded picture file -> ``(channels, H, W)`` in [0, 1], resized and centre-cropped like
    the course's data sets (:func:`maelib.data.decode.decode_image`)."""
    try:
        arr = decode_image(io.BytesIO(bytes(content)), size, channels=channels)
    except Exception as err:  # Pillow raises several kinds for a file that is not a picture
        raise ValueError(f"the uploaded file is not a picture Pillow can read ({err}); upload a JPEG or PNG") from err
    return torch.tensor(arr, dtype=torch.float32) / 255


# --------------------------------------------------------------------------- the widget
_CANVAS_ESM = """
export default {
  render({ model, el }) {
    const canvas = document.createElement("canvas");
    canvas.className = "mae-canvas";
    canvas.style.touchAction = "none";
    canvas.style.cursor = "crosshair";
    el.appendChild(canvas);
    const picture = new Image();
    let url = null;
    function load() {
      if (url) URL.revokeObjectURL(url);
      url = URL.createObjectURL(new Blob([model.get("image")], { type: "image/png" }));
      picture.onload = draw;
      picture.src = url;
    }
    function draw() {
      const [rows, cols] = model.get("grid");
      const width = model.get("display_size"), height = Math.round(width * rows / cols);
      canvas.width = width; canvas.height = height;
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      if (picture.complete && picture.naturalWidth) ctx.drawImage(picture, 0, 0, width, height);
      const pw = width / cols, ph = height / rows;
      ctx.fillStyle = "rgba(128, 128, 128, 0.85)";  // grey, with a hint of what lies beneath
      model.get("mask").forEach((hidden, i) => {
        if (hidden) ctx.fillRect((i % cols) * pw, Math.floor(i / cols) * ph, pw, ph);
      });
      ctx.strokeStyle = "rgba(255, 255, 255, 0.25)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let c = 1; c < cols; c++) { ctx.moveTo(c * pw, 0); ctx.lineTo(c * pw, height); }
      for (let r = 1; r < rows; r++) { ctx.moveTo(0, r * ph); ctx.lineTo(width, r * ph); }
      ctx.stroke();
      const selected = model.get("selected");
      if (selected >= 0) {
        ctx.strokeStyle = "#ffd400"; ctx.lineWidth = 3;
        ctx.strokeRect((selected % cols) * pw + 1.5, Math.floor(selected / cols) * ph + 1.5, pw - 3, ph - 3);
      }
    }
    function at(event) {  // the pointer in the image's own pixels
      const box = canvas.getBoundingClientRect(), [h, w] = model.get("img_size");
      return [(event.clientX - box.left) / box.width * w, (event.clientY - box.top) / box.height * h];
    }
    let pending = [], scheduled = false;
    function flush() {
      scheduled = false;
      if (pending.length) { model.send({ event: "move", points: pending }); pending = []; }
    }
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      model.send({ event: "down", points: [at(event)] });
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!event.buttons) return;
      pending.push(at(event));
      if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
    });
    canvas.addEventListener("pointerup", () => { flush(); model.send({ event: "up", points: [] }); });
    model.on("change:image", load);
    for (const name of ["mask", "selected", "grid", "display_size"]) model.on(`change:${name}`, draw);
    load();
    return () => { if (url) URL.revokeObjectURL(url); };
  },
};
"""


class MaskCanvas(anywidget.AnyWidget):
    """The image with its hidden patches greyed out; sends pointer positions (image pixels) to Python.

    Messages to Python: ``{"event": "down" | "move" | "up", "points": [[x, y], ...]}``.
    """

    _esm = _CANVAS_ESM
    image = traitlets.Bytes(b"").tag(sync=True)  # PNG of the image at its own size
    img_size = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=(64, 64)).tag(sync=True)
    grid = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=(8, 8)).tag(sync=True)
    mask = traitlets.List(traitlets.Bool()).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)  # the inspected patch, -1 for none
    display_size = traitlets.Int(256).tag(sync=True)  # width on screen, in CSS pixels


@dataclass
class Subject:
    """A model to play with, its normaliser, and the images offered (``(B, C, H, W)`` in [0, 1])."""

    model: torch.nn.Module
    normalizer: PixelNormalizer | None
    images: torch.Tensor


class Playground:
    """The lesson's widget: pick an image, hide patches, watch the reconstruction and the decoder's attention.

    ``Playground({"faces": Subject(...), "facades": Subject(...)})``, displayed as a cell's result.
    Scripts drive it with the same methods the canvas uses: :meth:`show`, :meth:`apply_preset`,
    :meth:`stroke` (paint / erase / inspect along image-pixel points), and read :attr:`last`.

    Args:
        subjects: name -> :class:`Subject`; the first is shown first.
        preset / ratio: the mask every new image starts with (:func:`preset_mask`).
        display_size: the width of each view on screen, in CSS pixels.
        baselines: the classical fills scored on every edit (names in :data:`maelib.metrics.BASELINES`).
    """

    def __init__(self, subjects: Mapping[str, Subject], *, preset: str = "square", ratio: float = 0.25,
                 display_size: int = 192, baselines: Iterable[str] = tuple(metrics.BASELINES)):
        if not subjects:
            raise ValueError("give at least one Subject (a model, its normaliser and images) to play with")
        self.subjects = dict(subjects)
        self.size = display_size
        self.baselines = tuple(baselines)  # at 256 px, leave out biharmonic inpainting: too slow to be live
        self.seed = 0
        self.last: Update | None = None
        self.attention: AttentionMap | None = None
        self._stroke_from: list[float] | None = None

        first = next(iter(self.subjects.values()))
        self.picker = w.Dropdown(options=list(self.subjects), description="model")
        self.index = w.IntSlider(0, min=0, max=len(first.images) - 1, description="test image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="your own")
        self.tool = w.ToggleButtons(options=TOOLS, value="paint", description="mouse",
                                    style={"button_width": "64px"})
        self.preset = w.Dropdown(options=PRESETS, value=preset, description="mask")
        self.ratio = w.FloatSlider(ratio, min=0.05, max=0.9, step=0.05, description="ratio")
        self.again = w.Button(description="new draw", tooltip="the same preset, drawn again at random")
        self.canvas = MaskCanvas(display_size=display_size)
        self.views = {name: w.Image(format="png", layout=w.Layout(width=f"{display_size}px"))
                      for name in ("reconstruction", "paste-back", "attention")}
        for name, view in self.views.items():
            view.add_class(f"mae-{name}")
        self.readout = w.HTML().add_class("mae-psnr")
        titles = ["hidden patches (paint here)", "reconstruction", "paste-back", "decoder attention (inspect)"]
        columns = zip(titles, [self.canvas, *self.views.values()], strict=True)
        self.widget = w.VBox([
            w.HBox([self.picker, self.index, self.upload]),
            w.HBox([self.tool, self.preset, self.ratio, self.again]),
            w.HBox([w.VBox([w.HTML(f"<b>{title}</b>"), view]) for title, view in columns]),
            self.readout,
        ])

        self.picker.observe(lambda _: self._pick(), "value")
        self.index.observe(lambda _: self.show(self.picker.value, self.index.value), "value")
        self.upload.observe(lambda _: self._uploaded(), "value")
        self.preset.observe(lambda _: self.apply_preset(self.preset.value, self.ratio.value), "value")
        self.ratio.observe(lambda _: self.apply_preset(self.preset.value, self.ratio.value), "value")
        self.again.on_click(lambda _: self.apply_preset(self.preset.value, self.ratio.value, self.seed + 1))
        self.canvas.on_msg(self._on_pointer)

        self.subject = first
        self.image = first.images[0]
        self.masked = torch.zeros(first.model.num_patches, dtype=torch.bool)
        self.show(self.picker.value, 0)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ----------------------------------------------------------- what the controls call
    def show(self, name: str, index: int = 0, image: torch.Tensor | None = None) -> Update:
        """Play with model ``name`` on its image ``index`` (or on ``image``), under the current preset."""
        if name not in self.subjects:
            raise ValueError(f"no model {name!r} here; choose one of {list(self.subjects)}")
        self.subject = self.subjects[name]
        self.image = image if image is not None else self.subject.images[index]
        self.attention = None  # an inspected patch belongs to the image it was inspected on
        model = self.subject.model
        self.canvas.img_size, self.canvas.grid = model.img_size, model.grid_size
        self.canvas.image = to_png(self.image)
        return self.apply_preset(self.preset.value, self.ratio.value, self.seed)

    def apply_preset(self, kind: str, ratio: float, seed: int = 0) -> Update | None:
        """Replace the mask by a preset (:func:`preset_mask`); ``seed`` draws another one."""
        self.seed = seed
        try:
            masked = preset_mask(kind, self.subject.model.grid_size, ratio, seed)
        except ValueError as err:  # e.g. a ratio that rounds to no row at all
            self.readout.value = f"<span style='color:#b00'>{err}</span>"
            return None
        return self.set_mask(masked)

    def set_mask(self, masked: torch.Tensor) -> Update:
        """Show ``masked`` and refresh every view."""
        self.masked = masked
        if self.attention is not None and not bool(masked[self.attention.patch]):
            self.attention = None  # the inspected patch is visible now: nothing to explain
        return self.refresh()

    def stroke(self, points: Sequence[Sequence[float]], tool: str | None = None) -> Update | None:
        """Apply ``tool`` (default: the one selected) along ``points`` in image pixels, as a mouse drag does.

        ``paint`` hides the patches the stroke passes over, ``erase`` shows them again, ``inspect``
        shows the decoder's attention from the hidden patch under the last point.
        """
        tool = tool or self.tool.value
        model = self.subject.model
        if tool == "inspect":
            patch = patch_at(*points[-1], model.grid_size, model.patch_size)
            if patch is not None:
                return self.inspect(patch)
            return None
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; choose one of {TOOLS}")
        patches = stroke_patches(points, model.grid_size, model.patch_size)
        try:
            masked = edit_mask(self.masked, patches, hide=tool == "paint")
        except ValueError as err:
            self.readout.value = f"<span style='color:#b00'>{err}</span>"
            return None
        if torch.equal(masked, self.masked):
            return None  # the pointer moved inside patches already done: nothing to recompute
        return self.set_mask(masked)

    def inspect(self, patch: int) -> Update | None:
        """Show the decoder's attention from hidden ``patch``'s mask token (a visible patch: say so)."""
        if not bool(self.masked[patch]):
            self.readout.value = (f"{self.status()}<br><span style='color:#b00'>patch {patch} is visible: "
                                  "click a grey patch to see where the decoder looks to fill it</span>")
            return None
        self.attention = attention_from(self.subject.model, self.image, self.masked, patch,
                                        normalizer=self.subject.normalizer)
        return self.refresh()

    def refresh(self) -> Update:
        """Recompute the reconstruction and the scores for the current image and mask; redraw every view."""
        s = self.subject
        self.last = update(s.model, self.image, self.masked, normalizer=s.normalizer, baselines=self.baselines)
        if self.attention is not None:  # the mask changed: the same query patch, read anew
            self.attention = attention_from(s.model, self.image, self.masked, self.attention.patch,
                                            normalizer=s.normalizer)
        self.canvas.mask = self.masked.tolist()
        self.canvas.selected = self.attention.patch if self.attention is not None else -1
        self.views["reconstruction"].value = to_png(self.last.recon, self.size)
        self.views["paste-back"].value = to_png(self.last.pasted, self.size)
        self.views["attention"].value = to_png(self._attention_rgb(), self.size)
        self.readout.value = self.status()
        return self.last

    # ----------------------------------------------------------- helpers of the widget
    def _attention_rgb(self) -> np.ndarray:
        if self.attention is None:  # nothing inspected yet: the image, faded
            return (_rgb(self.image).astype(np.float32) * 0.3 + 40).astype(np.uint8)
        return attention_picture(self.image, self.masked, self.attention, self.subject.model.patch_size)

    def status(self) -> str:
        """The readout under the views, as text: hidden patches, masked PSNRs, the inspected patch."""
        u, hidden = self.last, int(self.masked.sum())
        text = f"{hidden} of {len(self.masked)} patches hidden"
        if u is not None and u.model_psnr is not None:
            text += f" | masked PSNR: MAE {u.model_psnr:.2f} dB"
            if u.best_baseline is not None:
                name, best = u.best_baseline
                text += f", best classical fill ({method_label(name)}) {best:.2f} dB"
        if self.attention is not None:
            share = self.attention.visible_share(self.masked)
            text += f" | patch {self.attention.patch}: {share:.0%} of its attention on visible patches"
        return text

    def _pick(self) -> None:
        subject = self.subjects[self.picker.value]
        self.attention = None
        self.index.max = len(subject.images) - 1
        self.show(self.picker.value, min(self.index.value, self.index.max))

    def _uploaded(self) -> None:
        if not self.upload.value:
            return
        model = self.subject.model
        try:
            image = upload_to_image(self.upload.value[0]["content"], model.img_size, model.in_chans)
        except ValueError as err:
            self.readout.value = f"<span style='color:#b00'>{err}</span>"
            return
        self.attention = None
        self.show(self.picker.value, image=image)

    def _on_pointer(self, _widget, content: dict, _buffers) -> None:
        points = [list(map(float, p)) for p in content.get("points", [])]
        if content.get("event") == "down":
            self._stroke_from = points[-1]
        elif content.get("event") == "up" or self._stroke_from is None:
            self._stroke_from = None
            return
        elif points:  # a move: continue the stroke from its last point
            points, self._stroke_from = [self._stroke_from, *points], points[-1]
        if points:
            self.stroke(points)


# --------------------------------------------------------------------------- a still of the views, and speed
def snapshot(playground: Playground, title: str | None = None):
    """A matplotlib figure of the widget's four views as they are now (for readers without a kernel)."""
    import matplotlib.pyplot as plt

    u = playground.last
    shown = np.where(np.repeat(np.repeat(playground.masked.reshape(playground.subject.model.grid_size).numpy(),
                                         playground.subject.model.patch_size, 0),
                               playground.subject.model.patch_size, 1)[..., None], 128, _rgb(playground.image))
    panels = {"hidden patches": shown, "reconstruction": _rgb(u.recon), "paste-back": _rgb(u.pasted),
              "decoder attention": playground._attention_rgb()}
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.2))
    for ax, (name, arr) in zip(axes, panels.items(), strict=True):
        ax.imshow(arr, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


@dataclass
class Timings:
    """How long updates took: ``wall_ms`` (what the user waits) and ``cpu_ms`` (the process's CPU time,
    which other programs competing for the cores do not inflate)."""

    wall_ms: list[float]
    cpu_ms: list[float]

    def summary(self) -> str:
        """``median 40.1 ms of CPU (90% under 45.0 ms), 52.3 ms wall clock (90% under 61.0 ms), 50 updates``."""
        def p90(xs: Sequence[float]) -> float:
            ordered = sorted(xs)
            return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]

        return (f"median {statistics.median(self.cpu_ms):.1f} ms of CPU (90% under {p90(self.cpu_ms):.1f} ms), "
                f"{statistics.median(self.wall_ms):.1f} ms wall clock (90% under {p90(self.wall_ms):.1f} ms), "
                f"{len(self.wall_ms)} updates")


def time_updates(playground: Playground, repeats: int = 50, *, threads: int = 1, seed: int = 0) -> Timings:
    """Time ``repeats`` widget updates (model, baselines, PSNRs, the three pictures), each on a fresh
    random mask (75% hidden), with torch on ``threads`` threads; a first, warm-up update is left out."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    wall, cpu = [], []
    try:
        grid = playground.subject.model.grid_size
        for k in range(repeats + 1):
            masked = preset_mask("random", grid, 0.75, seed + k)
            start, start_cpu = time.perf_counter(), time.process_time()
            playground.set_mask(masked)
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    finally:
        torch.set_num_threads(before)
    return Timings(wall[1:], cpu[1:])


def time_parts(subject: Subject, image: torch.Tensor, masked: torch.Tensor, *, repeats: int = 20, threads: int = 1,
               baselines: Iterable[str] = tuple(metrics.BASELINES), display_size: int = 192) -> dict[str, float]:
    """Where an update's time goes: the median CPU milliseconds of the model's reconstruction, of each
    classical fill, and of encoding the three pictures, each run ``repeats`` times on ``image`` and ``masked``."""
    imgs = image[None].float()
    mask = as_mask(masked.cpu())
    pixels = patch_mask_to_pixels(mask.mask, subject.model.patch_size, subject.model.grid_size)
    recon = subject.model.reconstruct(imgs, mask, normalizer=subject.normalizer).clamp(0, 1)
    parts = {"model": lambda: subject.model.reconstruct(imgs, mask, normalizer=subject.normalizer)}
    parts |= {name: (lambda fill=metrics.BASELINES[name]: fill(imgs, pixels)) for name in baselines}
    parts["pictures"] = lambda: [to_png(recon[0], display_size) for _ in range(3)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {}
        for name, run in parts.items():
            run()  # warm-up
            times = []
            for _ in range(repeats):
                start = time.process_time()
                run()
                times.append((time.process_time() - start) * 1000)
            out[name] = statistics.median(times)
        return out
    finally:
        torch.set_num_threads(before)
