"""The words tables and figures use for the names in the code (one vocabulary for ``metrics`` and ``viz``)."""

# a history's series (maelib.train.fit)
SERIES_LABELS = {"train_loss": "training loss", "val_loss": "validation loss", "lr": "learning rate"}
# a score, as a figure's title says it
METRIC_LABELS = {"masked_psnr": "masked PSNR (dB), higher is better",
                 "ssim": "SSIM of the paste-back, higher is better"}
# a table's column
COLUMN_LABELS = {"method": "method", "masked_psnr": "masked PSNR (dB)", "ssim": "SSIM",
                 "train min": "training (min)"}
# the classical baselines (maelib.metrics.BASELINES)
METHOD_LABELS = {"mean_fill": "mean fill", "interpolate_fill": "interpolation", "telea_inpaint": "Telea inpainting",
                 "biharmonic_inpaint": "biharmonic inpainting"}


def method_label(name: str) -> str:
    """The words for a method: a baseline's name (``"interpolate_fill"`` -> ``"interpolation"``),
    anything else (a model's own label) as it is."""
    return METHOD_LABELS.get(str(name), str(name))
