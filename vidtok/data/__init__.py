"""Labelled video data: clip samplers, transforms, datasets (Kinetics CSV, lists, folders), loaders, synthetic data.

See :mod:`vidtok.data.datasets` for the dataflow. Typical use::

    from vidtok.data import build_dataset, build_loader

    train_set = build_dataset(cfg.data, "train", seed=cfg.train.seed, bad_files=run_dir / "bad_files.txt")
    loader = build_loader(train_set, cfg.data, train=True, seed=cfg.train.seed)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:  # batch["video"]: (B, C, T, H, W) float32, batch["label"]: (B,)
            ...
"""

from __future__ import annotations

from vidtok._lazy import lazy_exports

# Imported on use, so that ``import vidtok.data.clip_sampling`` (what classify/embed and their decode workers need)
# does not import torchvision: its import pulls in torch._dynamo, about 2.5 s on a 2-core machine, once per process.
_LAZY = {
    **dict.fromkeys(
        [
            "VideoClipDataset",
            "build_dataset",
            "parse_class_folders",
            "parse_kinetics_csv",
            "parse_list_file",
            "read_bad_files",
            "read_classes",
            "resolve_classes",
        ],
        "vidtok.data.datasets",
    ),
    **dict.fromkeys(
        ["EpochSampler", "SeededDataset", "build_loader", "collate_clips", "sample_seed", "seed_worker"],
        "vidtok.data.loader",
    ),
    **dict.fromkeys(
        ["Clip", "random_clip", "sample_clips", "segment_clip", "shuffle_time", "sliding_clips", "uniform_clips"],
        "vidtok.data.clip_sampling",
    ),
    **dict.fromkeys(["MOTIONS", "make_synthetic_dataset"], "vidtok.data.synthetic"),
    "Preprocessing": "vidtok.preprocessing",
    **dict.fromkeys(
        ["NORMALIZATION", "EvalTransform", "MixupCutmix", "TrainTransform", "build_transforms"],
        "vidtok.data.transforms",
    ),
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
