"""How well the image side (tokenizer + MaskGIT) alone reproduces the test stimuli.

By default no fMRI is involved: the test images' own (true) features condition MaskGIT, so the
numbers say what the image side can do at best. With `--condition fmri` MaskGIT is conditioned on
features predicted from fMRI instead (the subject's fMRI autoencoder from `--config`): on the test
trials the heads' predictions as LEA decodes them; with `--split train` out-of-fold predictions for
the training trials, from folds of whole image classes (models/alignment.py `out_of_fold_decode`),
so that sampling settings for decoding from fMRI can be chosen without the test set. Printed and
written as JSON:

With `--split train` the same is measured on training images (for choosing settings such as the
guidance scale without the test set). With `--split pool --pool FOLDER` it is measured on images of
a decoder pool (`python -m datasets.decoder_pool`), i.e. on what MaskGIT was trained on: whether it
fits what it saw, apart from whether it generalises (their attributes are read from the file names).

- tokenizer: codes in use over the training and test images (out of the codebook), perplexity of
  the code distribution, and the round trip (encode -> decode) of the test images identified in
  the feature space (pair-wise, n-way top-1) and by pixel PCC;
- decoded from true features: the same identification for `--num-samples` MaskGIT samples per
  test image (each sample scored on its own), at `--guidance` (classifier-free guidance scale),
  each the best of `--candidates` MaskGIT samples (models/rerank.py);
- diversity: mean RMS pixel difference (0-1 scale) between two samples of the same image, next to
  that between samples of different images, and the mean feature correlation of two samples of
  one image;
- attribute accuracy (simulated data): the semantic classifier (fitted on the training stimuli,
  evaluation/semantic_sim.py) labels the round trip and every sample with shape, palette, stripe
  orientation and frequency and layout; per attribute and their mean, beside the same classifier on
  the scored stimuli themselves (with `--split train` the classifier has seen those stimuli, so that
  ceiling is optimistic; the comparison between settings is what it is for);
- condition probe (simulated data): how much of each category attribute the condition itself
  carries, i.e. the test accuracy of a linear softmax read-out of each attribute (shape, palette, ...)
  from the features MaskGIT is conditioned on, fitted on the training images' features (the
  semantic classifier's regression, evaluation/semantic_sim.py). An attribute the condition does
  not carry cannot be drawn for a category MaskGIT has not seen.

    python bench/eval_image_side.py --tokenizer demo_weights/tokenizer.pt \
        --maskgit demo_weights/maskgit.pt [--guidance 2] [--out eval.json --png eval.png]
    python bench/eval_image_side.py ... --split train --count 120 --condition fmri

Features and data come from `--config` (default: the demo's LEA config, simulated GOD).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402,F401  (registers the Model schemas)
from datasets import load_subject  # noqa: E402
from datasets.decoder_pool import pool_attributes  # noqa: E402
from datasets.image_folder import image_files, load_image  # noqa: E402
from evaluation import metrics as M  # noqa: E402
from evaluation.figures import column_grid  # noqa: E402
from evaluation.semantic_sim import (ATTRIBUTE_SIZES, ATTRIBUTES, AttributeClassifier, attributes_of,  # noqa: E402
                                     find_categories_file, read_categories, stimulus_categories)
from inference.api import LEA  # noqa: E402
from models.alignment import out_of_fold_decode  # noqa: E402
from models.image_features import build_image_features_from_config, features_of  # noqa: E402
from models.lea import load_trained_network, to_uint8  # noqa: E402
from models.rerank import best_candidates, take_kept  # noqa: E402
from models.vqgan import tokenizer_input  # noqa: E402
from training.codebook import usage_stats  # noqa: E402
from utils.config import load_config  # noqa: E402

DEFAULT_CONFIG = "configs/demo/LEA_GOD.yaml"
TOKENIZE_BATCH = 64


def identification(gt_feats: torch.Tensor, feats: torch.Tensor, gt_u8: np.ndarray, images_u8: np.ndarray) -> dict:
    """gt_feats [T, D], feats [T, S, D], images [T, S, H, W, 3] -> identification scores."""
    n = min(M.DEFAULT_N_WAY, len(gt_feats))
    return {"feature_pairwise": M.feature_identification(gt_feats, feats).value,
            f"feature_{n}way_top1": M.feature_n_way_top1(gt_feats, feats, n).value,
            "pixel_pcc_pairwise": M.pairwise_identification(gt_u8, images_u8, "pcc").value}


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2).mean())


def diversity(images: np.ndarray, feats: torch.Tensor) -> dict:
    """images [T, S, H, W, 3], feats [T, S, D]."""
    T, S = images.shape[:2]
    if S < 2:
        return {"skipped": "needs at least 2 samples per image"}
    within = [rms(images[t, i], images[t, j]) for t in range(T) for i, j in itertools.combinations(range(S), 2)]
    between = [rms(images[t, 0], images[u, 0]) for t, u in itertools.combinations(range(T), 2)]
    f = torch.nn.functional.normalize(feats - feats.mean((0, 1)), dim=-1)  # [T, S, D]
    corr = [float((f[t, i] * f[t, j]).sum()) for t in range(T) for i, j in itertools.combinations(range(S), 2)]
    return {"rms_within_image": float(np.mean(within)), "rms_between_images": float(np.mean(between)),
            "feature_corr_within_image": float(np.mean(corr))}


def fmri_conditions(cfg, subject: str, split: str, index: np.ndarray) -> tuple[torch.Tensor, str]:
    """Features predicted from fMRI for the scored images [T, D]: on the test split the fitted heads'
    (as LEA decodes); on the training split out-of-fold predictions (heads fitted on the other
    folds of the training trials, models/alignment.py), averaged over the trials of each image.
    Where the images have class labels the folds hold out whole classes, as the test set's classes
    are absent from training (GOD); the second value says how the folds were made."""
    api = LEA.from_config(cfg, subject, "cpu")
    lea, data = api.pipeline, api.data
    if split == "test":
        predicted = lea.heads.decode(lea.fmri_latents(data.test_fmri).double())  # [T, D]
        return predicted.float(), "heads fitted on all training trials"
    trial_image = torch.as_tensor(data.train_image_index, dtype=torch.long)  # [N]
    paired = api.features(data.train_images).double()[trial_image]  # [N, D]
    labels = data.train_labels
    by_class = labels is not None and bool((labels >= 0).all())
    groups = torch.as_tensor(labels, dtype=torch.long)[trial_image] if by_class else None  # [N]
    predicted = out_of_fold_decode(cfg.align, lea.fmri_latents(data.train_fmri).double(), paired,
                                   cfg.align.cv_folds, groups=groups)  # [N, D]
    folds = f"{cfg.align.cv_folds} folds " + ("of whole image classes" if by_class else "of trials (no class labels)")
    return torch.stack([predicted[trial_image == i].mean(0) for i in index]).float(), f"out of fold, {folds}"


NO_GROUND_TRUTH = "no simulator ground_truth/categories.json above the data folder"


def stimulus_attributes(data, data_path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Attributes int of the training [M, A] and test [T, A] stimuli from the simulator's ground
    truth above `data_path`; None on data without it (recorded data)."""
    path = find_categories_file(data_path)
    if path is None:
        return None
    categories = read_categories(path)
    train_cat, test_cat = stimulus_categories(data, categories, path.parent)
    return attributes_of(categories, train_cat), attributes_of(categories, test_cat)


def readout_accuracy(probe: AttributeClassifier, feats: torch.Tensor, truth: np.ndarray) -> dict[str, float]:
    """Per attribute: accuracy of `probe`'s read-out of features [T, D] against attributes int [T, A]."""
    log_probs = probe.log_probs_of_features(feats.double())  # per attribute [T, k]
    return {name: float((lp.argmax(1).numpy() == truth[:, a]).mean())
            for a, (name, lp) in enumerate(zip(ATTRIBUTES, log_probs))}


def condition_probe(data, data_path: str, train_feats: torch.Tensor, test_feats: torch.Tensor) -> dict:
    """Per attribute: test accuracy of a linear read-out fitted on the training images' conditions
    [N, D] and applied to the test stimuli's [T, D], with its chance."""
    attributes = stimulus_attributes(data, data_path)
    if attributes is None:
        return {"skipped": NO_GROUND_TRUTH}
    train, truth = attributes  # [M, A], [T, A]
    accuracy = readout_accuracy(AttributeClassifier.fit_features(train_feats.double(), train), test_feats, truth)
    return {name: {"accuracy": accuracy[name], "chance": 1.0 / k} for name, k in zip(ATTRIBUTES, ATTRIBUTE_SIZES)}


def pool_sample(folder: str, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` evenly spaced images of a decoder pool, uint8 [T, size, size, 3], and their attributes
    int [T, A] read from the file names."""
    files = image_files(folder)
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    return np.stack([load_image(f, size) for f in files]), pool_attributes(files)


def attribute_accuracy(data, data_path: str, split: str, chosen: np.ndarray, columns: dict,
                       truth: np.ndarray | None = None) -> dict:
    """Per column (name -> uint8 images [T, S, H, W, 3] of the chosen images): accuracy of the
    semantic classifier per attribute and their mean; `chosen` indexes the split's stimuli, or
    `truth` [T, A] gives the attributes of the chosen images (a decoder pool's)."""
    attributes = stimulus_attributes(data, data_path)
    if attributes is None:
        return {"skipped": NO_GROUND_TRUTH}
    train, test = attributes  # [M, A], [T, A]
    classifier = AttributeClassifier.fit(data.train_images, train)
    if truth is None:
        truth = (test if split == "test" else train)[chosen]  # [T, A]
    out = {}
    for name, images in columns.items():
        t, s = images.shape[:2]
        log_probs = classifier.log_probs(images.reshape(t * s, *images.shape[2:]))  # per attribute [T*S, k]
        rates = {a: float((lp.argmax(1).numpy().reshape(t, s) == truth[:, i, None]).mean())
                 for i, (a, lp) in enumerate(zip(ATTRIBUTES, log_probs))}
        out[name] = {"mean": float(np.mean(list(rates.values()))), **rates}
    out["chance"] = {"mean": float(np.mean([1.0 / k for k in ATTRIBUTE_SIZES])),
                     **{a: 1.0 / k for a, k in zip(ATTRIBUTES, ATTRIBUTE_SIZES)}}
    return out


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--maskgit", help="omit to evaluate the tokenizer only")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--subject", default=None, help="default: the config's first subject")
    p.add_argument("--num-samples", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="default: the config's Sampling.steps")
    p.add_argument("--temperature", type=float, default=None, help="default: Sampling.choice_temperature")
    p.add_argument("--guidance", type=float, default=None, help="default: Sampling.guidance_scale")
    p.add_argument("--candidates", type=int, default=None,
                   help="best of N per sample (models/rerank.py), scored with the training images' feature "
                        "statistics; default: Sampling.candidates")
    p.add_argument("--split", choices=("test", "train", "pool"), default="test",
                   help="score the test stimuli, or --count evenly spaced training images (to choose settings "
                        "without looking at the test set), or --count evenly spaced images of the decoder pool --pool")
    p.add_argument("--condition", choices=("true", "fmri"), default="true",
                   help="condition MaskGIT on the images' true features, or on features predicted from fMRI: the "
                        "fitted heads' on the test trials, out-of-fold ones on the training trials (to choose "
                        "sampling settings for decoding from fMRI without the test set); not with --split pool")
    p.add_argument("--count", type=int, default=25, help="images scored with --split train / pool")
    p.add_argument("--pool", help="the decoder pool folder scored with --split pool (python -m datasets.decoder_pool)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", action="store_true", help="also the condition probe (simulated data, test split)")
    p.add_argument("--set", action="append", default=[], help="config override Section.key=value")
    p.add_argument("--out", help="write the numbers as JSON here")
    p.add_argument("--png", help="write ground truth | round trip | samples rows here")
    args = p.parse_args(argv)

    cfg = load_config(args.config, args.set)
    subject = args.subject or cfg.data.subjects[0]
    data = load_subject(cfg.data.dataset, cfg.data.path, subject, roi_patch=cfg.data.roi_patch)
    extractor = build_image_features_from_config(cfg.features)
    tokenizer = load_trained_network("tokenizer", args.tokenizer)
    size = tokenizer.config.resolution
    truth = None
    if args.split == "test":
        index = np.arange(len(data.test_images))
        chosen = data.test_images
    elif args.split == "train":
        index = np.linspace(0, len(data.train_images) - 1, args.count).round().astype(int)
        chosen = data.train_images[index]
    else:
        if not args.pool:
            p.error("--split pool needs --pool FOLDER (a folder written by python -m datasets.decoder_pool)")
        chosen, truth = pool_sample(args.pool, args.count, cfg.data.image_size)
        index = np.arange(len(chosen))
    if args.condition == "fmri" and args.split == "pool":
        p.error("--condition fmri needs --split test or train (the pool has no fMRI)")
    test = tokenizer_input(chosen, size)  # [T, 3, S, S]
    test_u8 = to_uint8(test)  # [T, S, S, 3]
    gt_feats = features_of(extractor, test_u8)  # [T, D] scored at the tokenizer's resolution
    conditions = features_of(extractor, chosen)  # [T, D] of the original images, as MaskGIT trained on them
    predicted_by = None
    if args.condition == "fmri":
        conditions, predicted_by = fmri_conditions(cfg, subject, args.split, index)  # [T, D]

    indices = torch.cat([tokenizer.encode(x[i:i + TOKENIZE_BATCH])[1].flatten()
                         for x in (tokenizer_input(data.train_images, size), test)
                         for i in range(0, len(x), TOKENIZE_BATCH)])
    used, perplexity = usage_stats(torch.bincount(indices, minlength=tokenizer.config.num_codebook))
    rt = to_uint8(tokenizer(test)[0])  # [T, S, S, 3]
    rt_feats = features_of(extractor, rt)
    result = {"tokenizer": args.tokenizer, "subject": subject, "split": args.split, "images": len(test), "features": extractor.describe(),
              "codes_in_use": used, "codebook_size": tokenizer.config.num_codebook,
              "codes_in_use_fraction": used / tokenizer.config.num_codebook, "code_perplexity": perplexity,
              "round_trip": identification(gt_feats, rt_feats[:, None], test_u8, rt[:, None])}
    if args.probe:
        test_conditions = conditions if args.split == "test" else features_of(extractor, data.test_images)
        result["condition_probe"] = condition_probe(data, cfg.data.path, features_of(extractor, data.train_images),
                                                    test_conditions)
    columns = [("ground truth", test_u8), ("round trip", rt)]
    decoded_key = "decoded_from_true_features" if args.condition == "true" else "decoded_from_fmri"
    if args.maskgit:
        maskgit = load_trained_network("maskgit", args.maskgit)
        s = cfg.sampling
        steps = args.steps or s.steps
        temperature = s.choice_temperature if args.temperature is None else args.temperature
        guidance = s.guidance_scale if args.guidance is None else args.guidance
        k = s.candidates if args.candidates is None else args.candidates
        if k < 1:
            p.error(f"--candidates expected >= 1, found {k}")
        generator = torch.Generator().manual_seed(args.seed)
        tokens = maskgit.generate(conditions, num_samples=args.num_samples * k, steps=steps, schedule=s.schedule,
                                  choice_temperature=temperature, generator=generator,
                                  guidance_scale=guidance)  # [T, S*K, N]
        images = to_uint8(tokenizer.decode_indices(tokens.flatten(0, 1)))  # [T*S*K, H, W, 3]
        feats = features_of(extractor, images)  # [T*S*K, D]
        images = images.reshape(len(test_u8), args.num_samples, k, *images.shape[1:])  # [T, S, K, H, W, 3]
        feats = feats.reshape(*images.shape[:3], -1)  # [T, S, K, D]
        keep = torch.zeros(images.shape[:2], dtype=torch.long)  # [T, S]
        if k > 1:
            train_feats = features_of(extractor, data.train_images).double()  # [M, D]
            keep = best_candidates(feats, conditions, train_feats.mean(0), train_feats.std(0, unbiased=False))
        images = take_kept(images, keep)  # [T, S, H, W, 3]
        feats = torch.from_numpy(take_kept(feats.numpy(), keep))  # [T, S, D]
        result.update({"maskgit": args.maskgit, "condition": args.condition,
                       "condition_predicted_by": predicted_by, "steps": steps, "choice_temperature": temperature,
                       "guidance_scale": guidance, "num_samples": args.num_samples, "candidates": k,
                       decoded_key: identification(gt_feats, feats, test_u8, images),
                       "diversity": diversity(images, feats)})
        columns += [(f"sample {k + 1}", images[:, k]) for k in range(args.num_samples)]
    scored = {"stimuli": test_u8[:, None], "round_trip": rt[:, None]}
    if args.maskgit:
        scored[decoded_key] = images
    result["attribute_accuracy"] = attribute_accuracy(data, cfg.data.path, args.split, index, scored, truth)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.png:
        column_grid(columns).save(args.png)
    return result


if __name__ == "__main__":
    main()
