"""maelib: Masked Autoencoders (He et al. 2021), the library behind the notebook course.

Modules, one job each:
    patches   images <-> sequences of patches
    masking   which patches the encoder sees (random, block, square, combined, grid)
    models    MLP-MAE, ViT-MAE (facebookresearch/mae compatible), classifier
    losses    masked MSE, VGG19 perceptual loss, SSIM loss
    metrics   PSNR/SSIM on masked pixels, classical inpainting baselines
    data      datasets as uint8 tensors, downloads, splits, augmentation
    train     one fit loop with checkpoints and resume
    pretrained  official and maelib weights, frozen blocks + new blocks
    viz       figures
    presets   smoke / cpu / gpu settings of the lessons
    configs   named training configurations of `maelib train`
    distributed  torchrun process groups (DDP)
"""

__version__ = "0.1.0"
