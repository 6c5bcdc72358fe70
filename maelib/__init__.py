"""maelib: Masked Autoencoders (He et al. 2021), the library behind the notebook course.

Modules, one job each (the first five need torch alone):
    patches   images <-> sequences of patches; pasting the visible pixels back
    masking   which patches the encoder sees (random, block, square, combined, grid)
    masked_loss  the MAE loss: MSE on the masked patches (norm_pix_loss)
    normalize the per-channel pixel normaliser
    models    MLP-MAE, ViT-MAE (facebookresearch/mae compatible), classifier
    losses    VGG19 perceptual loss, SSIM loss, masked MSE + either
    ssim      the SSIM score
    metrics   PSNR/SSIM on masked pixels, classical inpainting baselines
    download  verified, atomic downloads (data sets and weights), from a mirror if one is set
    cache     where decoded tensors, downloaded weights and archives being unpacked are kept
    data      datasets as uint8 tensors, splits, augmentation
    train     one fit loop with checkpoints and resume
    pretrained  official and maelib weights, frozen blocks + new blocks
    probe     what an encoder learned: linear probes, k-NN, fine-tuning the top k blocks, scores with intervals
    inside    the class token's attention and the patch features' principal components, as pictures
    viz       figures
    presets   smoke / cpu / gpu settings of the lessons
    colab     a lesson's set-up on a Colab VM, data and checkpoints optionally in Google Drive
    configs   named training configurations of `maelib train`
    distributed  torchrun process groups (DDP)
"""

__version__ = "0.1.0"
