"""Data for the course: every data set as one uint8 tensor ``(N, C, H, W)``, decoded once.

Modules, one job each:
    root           where the data lives (``data_root``) and where decoded tensors are cached
    download       ``download_and_extract``: verified, atomic downloads (data and weights); the mirror setting
    sources        fetch a missing data set from its official source (or a mirror) into the root's layout
    decode         decode image files once, resize, cache the tensor on disk
    folders        load any folder of images or of ``.npy`` arrays
    datasets       ``cats_dogs``, ``faces``, ``facades``; ``balanced_choice``: the same subset from any source
    imageset       ``ImageSet``: images + labels/label maps/paths/split hints
    manifest       ``MANIFEST.tsv``: sha256, size and split hint per file
    splits         deterministic, seedable train/val/test splits (scikit-learn)
    torch_dataset  a torch ``Dataset`` over a uint8 tensor, serving floats in [0, 1]
    transforms     train / eval augmentation with torchvision.transforms.v2; PixelNormalizer
"""

from ..download import DownloadError, download_and_extract, sha256_of
from .datasets import CATS_DOGS_PER_CLASS, FACADES_SPLIT, FACES_VARIANTS, balanced_choice, cats_dogs, facades, faces
from .decode import NoImagesError, SkippedFilesWarning, decode_image, decode_label_map, load_images
from .folders import list_files, load_image_folder, load_npy_folder
from .imageset import ImageSet
from .manifest import read_manifest
from .root import cache_dir, data_root
from .splits import hint_indices, split_counts, split_indices
from .torch_dataset import ImageTensorDataset
from .transforms import PixelNormalizer, eval_transforms, train_transforms

__all__ = [
    "CATS_DOGS_PER_CLASS",
    "FACADES_SPLIT",
    "FACES_VARIANTS",
    "DownloadError",
    "ImageSet",
    "ImageTensorDataset",
    "NoImagesError",
    "PixelNormalizer",
    "SkippedFilesWarning",
    "balanced_choice",
    "cache_dir",
    "cats_dogs",
    "data_root",
    "decode_image",
    "decode_label_map",
    "download_and_extract",
    "eval_transforms",
    "facades",
    "faces",
    "hint_indices",
    "list_files",
    "load_image_folder",
    "load_images",
    "load_npy_folder",
    "read_manifest",
    "sha256_of",
    "split_counts",
    "split_indices",
    "train_transforms",
]
