"""Judging an encoder: features, linear probes, k-NN, partial fine-tuning, scores with intervals, looking inside."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from scipy.optimize import brentq
from torch.utils.data import TensorDataset

from maelib import configs
from maelib.data import ImageSet
from maelib.inside import cls_attention, overlay, pca_colours
from maelib.models import MAEClassifier, MaskedAutoencoderViT
from maelib.normalize import PixelNormalizer
from maelib.probe import (
    Score,
    compare,
    encode,
    extract_features,
    finetune,
    format_scores,
    knn_predict,
    linear_probe,
    mcnemar,
    predict,
    predict_features,
    score,
    tune_top_blocks,
    wilson_interval,
)
from maelib.train import TrainConfig, fit, make_loader


def tiny_vit(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, decoder_embed_dim=16,
               decoder_depth=1, decoder_num_heads=4)
    return MaskedAutoencoderViT(**{**cfg, **kw})


def toy_images(n=48, seed=0):
    """Labelled 32x32 images whose class is visible: class 1 has a bright square in the top-left corner."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    imgs = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    imgs[labels == 1, :, :16, :16] = 255
    return ImageSet(images=imgs, labels=labels, class_names=["plain", "square"],
                    paths=[Path(f"toy{i}.png") for i in range(n)])


def tiny_recipe(**train):
    run = configs.lesson06_finetune_cats_dogs("smoke")
    return dataclasses.replace(run, img_size=32, subset=None, batch_size=8, val_batch_size=16, lr=1e-3,
                               augment={"crop_scale": None, "hflip": True},
                               train=dataclasses.replace(run.train, **{"epochs": 2, "progress": False, **train}))


# --------------------------------------------------------------------------- fit trains classifiers
def test_fit_trains_a_classifier_with_cross_entropy_and_reports_validation_accuracy():
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(epochs=5, lr=0.1, weight_decay=0.0, task="classify", amp="off", progress=False)
    history = fit(model, make_loader(TensorDataset(x, y), 32), make_loader(TensorDataset(x, y), 64, shuffle=False),
                  config, device="cpu")
    assert history["val_accuracy"][-1] > 0.95 > history["val_accuracy"][0] - 0.5  # learned, and measured each epoch
    assert len(history["val_accuracy"]) == 5
    assert history["val_loss"][-1] < history["val_loss"][0]


def test_classification_needs_labels_and_its_own_loss():
    x = torch.randn(16, 2)
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(epochs=1, task="classify", amp="off", progress=False)
    with pytest.raises(ValueError, match="needs \\(images, labels\\) batches"):
        fit(model, make_loader(x, 8), config=config, device="cpu")
    with pytest.raises(ValueError, match="pass no loss_fn"):
        fit(model, make_loader(TensorDataset(x, torch.zeros(16).long()), 8), config=config, device="cpu",
            loss_fn=lambda m, imgs: m(imgs).sum())
    with pytest.raises(ValueError, match="task must be one of"):
        TrainConfig(task="segment")


# --------------------------------------------------------------------------- features
def test_features_are_the_class_token_and_the_mean_patch_token_of_the_normalised_images():
    model, set_ = tiny_vit(), toy_images(6)
    norm = PixelNormalizer((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    feats = extract_features(model, set_, normalizer=norm, batch_size=4)
    with torch.no_grad():
        tokens = model.eval().forward_features(norm(set_.images.float() / 255))
    assert feats.cls.shape == feats.mean.shape == (6, 32)
    assert torch.allclose(feats.cls, tokens[:, 0], atol=0.05)  # bf16 where the CPU has it
    assert torch.allclose(feats.mean, tokens[:, 1:].mean(1), atol=0.05)
    assert torch.equal(feats.labels, set_.labels)
    assert feats.get("cls+mean").shape == (6, 64)
    with pytest.raises(ValueError, match="pool must be one of"):
        feats.get("max")
    with pytest.raises(TypeError, match="MaskedAutoencoderViT"):
        encode(MAEClassifier(model, 2), set_)


# --------------------------------------------------------------------------- linear probe and k-NN
def separable(n, seed):
    """Two classes split by a hyperplane with a margin, in 16 dimensions of very different scales."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = (x[:, 3] + x[:, 7] > 0).long()
    x[:, 3] += torch.where(y == 1, 1.0, -1.0)  # a margin along the separating direction
    return x * torch.logspace(-2, 2, 16), y  # scales from 0.01 to 100: the BatchNorm makes them alike


def test_a_linear_probe_separates_separable_features():
    (x, y), (xt, yt) = separable(600, 0), separable(400, 1)
    probe, history = linear_probe(x, y, xt, yt, epochs=30, lr=1e-2)
    assert score(predict_features(probe, xt), yt).accuracy >= 0.99
    assert history["val_accuracy"][-1] >= 0.99
    assert probe.norm.affine is False and not any(p.requires_grad is False for p in probe.head.parameters())


def test_linear_probe_refuses_unlabelled_or_mismatched_features():
    with pytest.raises(ValueError, match="no labels"):
        linear_probe(torch.randn(10, 4), None)
    with pytest.raises(ValueError, match="N labels"):
        linear_probe(torch.randn(10, 4), torch.zeros(9).long())


def test_knn_labels_a_toy_set_that_no_line_separates():
    # XOR: four clusters, opposite corners share a label; k-NN gets them all, a linear probe cannot
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])

    def sample(n):
        which = torch.arange(n) % 4
        return centres[which] + 0.1 * torch.randn(n, 2, generator=g), labels[which]

    (x, y), (xt, yt) = sample(200), sample(100)
    assert score(knn_predict(x, y, xt, k=5), yt).accuracy == 1.0
    probe, _ = linear_probe(x, y, epochs=30, lr=1e-2)
    assert score(predict_features(probe, xt), yt).accuracy <= 0.8
    assert knn_predict(x[:3], y[:3], xt, k=20).shape == (100,)  # k capped at the training set's size


# --------------------------------------------------------------------------- fine-tuning
def test_partial_finetuning_trains_the_top_k_blocks_and_leaves_the_rest_bit_identical():
    encoder, set_ = tiny_vit(), toy_images(32)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = finetune(encoder, set_, set_, tiny_recipe(), top_k=1, device="cpu", progress=False)
    after = result.model.mae.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k for k in changed if k.startswith("blocks.2.")} and "norm.weight" in changed  # the top block trains
    frozen = [k for k in before if k.startswith(("blocks.0.", "blocks.1.", "patch_embed", "cls_token", "decoder",
                                                 "mask_token"))]
    assert frozen and not changed & set(frozen)  # the rest: bit for bit what it was
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())  # the encoder given: untouched
    assert result.history["val_accuracy"] and result.minutes > 0


def test_full_finetuning_trains_every_encoder_block_and_k_zero_only_the_head():
    classifier = tune_top_blocks(MAEClassifier(tiny_vit(), 2), None)
    trainable = {k for k, p in classifier.named_parameters() if p.requires_grad}
    assert {"mae.patch_embed.proj.weight", "mae.cls_token", "mae.blocks.0.attn.qkv.weight", "head.weight"} <= trainable
    assert not {k for k in trainable if "decoder" in k or k in ("mae.pos_embed", "mae.mask_token")}
    tune_top_blocks(classifier, 0)
    assert {k for k, p in classifier.named_parameters() if p.requires_grad} == \
        {"head.weight", "head.bias", "head_norm.weight", "head_norm.bias"}
    with pytest.raises(ValueError, match="between 0 and the encoder's 3 blocks"):
        tune_top_blocks(classifier, 4)


def test_finetuning_learns_a_visible_class_and_predict_scores_it():
    set_, test = toy_images(64, seed=0), toy_images(32, seed=1)
    result = finetune(tiny_vit(), set_, test, tiny_recipe(epochs=8), device="cpu", progress=False)
    assert score(predict(result.model, test), test.labels).accuracy >= 0.9


def test_finetune_refuses_a_reconstruction_recipe():
    with pytest.raises(ValueError, match="needs a classification recipe"):
        finetune(tiny_vit(), toy_images(8), None, configs.get_config("lesson06_mae_cats_dogs", "smoke"))


# --------------------------------------------------------------------------- scores and their noise
@pytest.mark.parametrize("correct,n", [(8, 10), (0, 10), (10, 10), (560, 800), (1, 3)])
def test_wilson_interval_inverts_the_score_test(correct, n):
    # the interval's ends are the proportions p0 at which the score statistic |p - p0| / sqrt(p0 (1 - p0) / n) is 1.96
    p, low, high = correct / n, *wilson_interval(correct, n)
    stat = lambda p0: abs(p - p0) / math.sqrt(p0 * (1 - p0) / n) - 1.96
    assert low == pytest.approx(0.0 if correct == 0 else brentq(stat, 1e-12, min(p, 1 - 1e-12)), abs=1e-9)
    assert high == pytest.approx(1.0 if correct == n else brentq(stat, max(p, 1e-12), 1 - 1e-12), abs=1e-9)


def test_score_prints_the_accuracy_with_its_interval_and_refuses_mismatches():
    s = score(torch.tensor([1, 1, 0, 0, 1]), torch.tensor([1, 0, 0, 0, 1]))
    assert (s.correct, s.n, s.accuracy) == (4, 5, 0.8)
    assert str(Score(560, 800)) == "70.0% [66.7%, 73.1%]"
    with pytest.raises(ValueError, match="must match"):
        score(torch.zeros(3), torch.zeros(4))


def test_mcnemar_counts_only_the_images_on_which_the_two_disagree():
    labels = torch.zeros(100, dtype=torch.long)
    a = labels.clone()
    b = labels.clone()
    b[:10] = 1  # B wrong on 10 images A gets right, never the other way round
    assert mcnemar(a, b, labels) == pytest.approx(2 * 0.5**10)
    assert mcnemar(a, a, labels) == 1.0
    c = labels.clone()
    c[10:15] = 1  # 10 against 5: not enough to tell
    assert mcnemar(b, c, labels) > 0.05


# --------------------------------------------------------------------------- looking inside
def test_cls_attention_is_the_class_tokens_row_without_itself():
    model, set_ = tiny_vit(), toy_images(5)
    maps = cls_attention(model, set_.images, batch_size=2)
    assert maps.shape == (5, 4, 4, 4)  # images, heads, 4x4 patch grid
    sums = maps.flatten(2).sum(-1)
    assert ((sums > 0) & (sums <= 1 + 1e-3)).all()
    assert model.blocks[-1].attn.weights is None and not model.blocks[-1].attn.keep_weights  # left as it was
    shown = overlay(set_.images, maps.mean(1))
    assert shown.shape == (5, 3, 32, 32) and 0 <= shown.min() and shown.max() <= 1


def test_pca_colours_give_alike_patches_alike_colours():
    tokens = torch.randn(2, 16, 8)
    tokens[1, 5] = tokens[0, 3]
    colours = pca_colours(tokens, (4, 4))
    assert colours.shape == (2, 3, 4, 4) and colours.min() >= 0 and colours.max() <= 1
    assert torch.allclose(colours[1, :, 1, 1], colours[0, :, 0, 3])  # patch 5 of image 1 = patch 3 of image 0
    with_cls = pca_colours(torch.cat([torch.zeros(2, 1, 8), tokens], dim=1), (4, 4))
    assert torch.allclose(with_cls, colours)  # the class token is left out
    with pytest.raises(ValueError, match="grid 3x3 has 9"):
        pca_colours(tokens, (3, 3))


def test_compare_says_which_differences_could_be_noise():
    labels = torch.zeros(400, dtype=torch.long)
    a = torch.ones(400, dtype=torch.long)
    a[:200] = 0  # A: 50%
    b = a.clone()
    b[200:260] = 0  # B: right on 60 more images: 65%
    c = a.clone()
    c[200:205] = 0  # C: right on 5 more: 51.25%
    big, small = compare(a, b, labels), compare(a, c, labels)
    assert big.difference == pytest.approx(0.15) and not big.noise and "not noise" in str(big)
    assert small.difference == pytest.approx(0.0125) and small.noise and "could be noise" in str(small)


def test_format_scores_is_a_markdown_table_with_a_dash_for_missing_cells():
    rows = {"MAE": {"probe": Score(3, 4), "k-NN": Score(1, 4)}, "random": {"probe": Score(2, 4)}}
    table = format_scores(rows, "encoder")
    lines = table.splitlines()
    assert lines[0] == "| encoder | probe | k-NN |" and lines[1] == "|---|---|---|"
    assert lines[2].startswith("| MAE | 75.0% [") and lines[3].endswith("| - |")
