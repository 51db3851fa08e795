"""Datasets on real generated files: Kinetics CSV (nested / flat), "path label" lists, class folders; bad files;
the loader's determinism, repeated sampling, multi-view testing and sharding."""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests._data_util import small_synth
from tests.videos import decode_all
from vidtok.config import TEST_SAMPLERS, Config, DataConfig, validate_config
from vidtok.data import (
    EpochSampler,
    VideoClipDataset,
    build_dataset,
    build_loader,
    read_bad_files,
    read_classes,
    resolve_classes,
)
from vidtok.data.clip_sampling import eval_clips
from vidtok.data.transforms import TrainTransform
from vidtok.errors import ConfigError
from vidtok.io import open_video


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return small_synth(tmp_path_factory)


def base_cfg(**kw) -> DataConfig:
    cfg = DataConfig(
        num_frames=8,
        frame_stride=2,
        crop_size=24,
        scale_range=(28, 32),
        test_short_side=28,
        hflip=False,
        test_clips=2,
        test_crops=1,
        batch_size=4,
        num_workers=0,
        backend="pyav",
    )
    return replace(cfg, **kw)


def videos(synth: Path, split: str = "train") -> list[tuple[Path, str]]:
    return sorted((p, p.parent.name) for p in (synth / split).rglob("*.mp4"))


def test_kinetics_csv_nested_layout(synth):
    cfg = base_cfg(format="kinetics", root=str(synth), train=str(synth / "train.csv"), val=str(synth / "val.csv"))
    assert resolve_classes(cfg) == ["right", "left", "up"]  # from <root>/classes.txt, in the generator's order
    ds = build_dataset(cfg, "train")
    assert len(ds) == 12 and ds.missing == []
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].shape == (3, 8, 24, 24) and item["video"].dtype == torch.float32
        assert ds.class_names[item["label"]] == Path(item["path"]).parent.name
        assert item["index"] == i
    val = build_dataset(cfg, "val")
    assert len(val) == 3 and val[0]["video"].shape == (2, 3, 8, 24, 24)  # 2 uniform views x 1 crop


def test_kinetics_csv_flat_layout_k400_names_and_missing(synth, tmp_path, caplog):
    k400 = read_classes("k400")
    assert len(k400) == 400 and k400[1] == "air drumming"
    root = tmp_path / "kinetics"
    (root / "val").mkdir(parents=True)
    rows = []
    for i, (src, _) in enumerate(videos(synth)[:4]):
        label = ["abseiling", "air drumming"][i % 2]
        yid = f"vid-{i}_x{i}"  # YouTube ids contain '-' and '_'
        shutil.copy(src, root / "val" / f"{yid}_{i * 10:06d}_{i * 10 + 10:06d}.mp4")
        rows.append([label, yid, i * 10, i * 10 + 10, "val", 0])
    rows.append(["abseiling", "gone_id", 5, 15, "val", 0])  # listed but not downloaded
    with open(root / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
        w.writerows(rows)
    cfg = base_cfg(format="kinetics", root=str(root), val=str(root / "val.csv"), classes="k400")
    with caplog.at_level(logging.WARNING, logger="vidtok.data"):
        ds = build_dataset(cfg, "val", train=True)
    assert len(ds) == 4 and ds.class_names == k400
    assert [lab for _, lab in ds.samples] == [0, 1, 0, 1]
    assert len(ds.missing) == 1 and "gone_id_000005_000015" in ds.missing[0]
    msgs = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert len(msgs) == 1 and "1 of 5 videos are missing" in msgs[0] and "gone_id" in msgs[0]
    assert ds[3]["video"].shape == (3, 8, 24, 24)


def test_list_files_space_and_comma(synth, tmp_path):
    vids = videos(synth)
    names = ["right", "left", "up"]
    spaced = tmp_path / "with space"
    spaced.mkdir()
    copy = spaced / "a clip.mp4"
    shutil.copy(vids[0][0], copy)
    lines_int = ["# path label", ""] + [f"{p.relative_to(synth)} {names.index(lab)}" for p, lab in vids]
    (synth / "train_list.txt").write_text("\n".join(lines_int) + "\n")
    lines_name = [f"{p},{lab}" for p, lab in vids] + [f"{copy}, {vids[0][1]}"]
    (tmp_path / "names.csv").write_text("\n".join(lines_name) + "\n")

    cfg = base_cfg(format="list", root=str(synth), train=str(synth / "train_list.txt"))
    ds = build_dataset(cfg, "train", class_names=["0", "1", "2"])
    assert len(ds) == 12
    assert [lab for _, lab in ds.samples] == [names.index(lab) for _, lab in vids]
    assert ds[0]["video"].shape == (3, 8, 24, 24)

    cfg2 = base_cfg(format="list", train=str(tmp_path / "names.csv"))
    assert resolve_classes(cfg2) == ["left", "right", "up"]  # derived: sorted names
    ds2 = build_dataset(cfg2, "train")
    assert len(ds2) == 13 and ds2.samples[-1] == (str(copy), ["left", "right", "up"].index(vids[0][1]))
    assert ds2[12]["path"] == str(copy)

    (tmp_path / "bad.txt").write_text(f"{vids[0][0]} 7\n")
    with pytest.raises(ConfigError, match="label index 7 out of range for 3 classes"):
        build_dataset(base_cfg(format="list", train=str(tmp_path / "bad.txt")), "train", class_names=names)
    (tmp_path / "unk.txt").write_text(f"{vids[0][0]} jumping\n")
    with pytest.raises(ConfigError, match="labels not in the class list .*'jumping'"):
        build_dataset(base_cfg(format="list", train=str(tmp_path / "unk.txt")), "train", class_names=names)


def test_class_folders(synth):
    cfg = base_cfg(format="folder", root=str(synth), classes="")
    cfg_nofile = replace(cfg, train=str(synth / "train"), val=str(synth / "val"))
    ds = build_dataset(cfg_nofile, "train", class_names=sorted(["right", "left", "up"]))
    assert len(ds) == 12 and ds.class_names == ["left", "right", "up"]
    for path, lab in ds.samples:
        assert Path(path).parent.name == ds.class_names[lab]
    val = build_dataset(cfg_nofile, "val", class_names=ds.class_names)
    assert len(val) == 3 and val[1]["video"].ndim == 5


def test_corrupt_truncated_missing_files(synth, tmp_path, caplog):
    good = [p for p, _ in videos(synth)[:5]]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 40)
    truncated = tmp_path / "truncated.mp4"
    data = good[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 3])  # PyAV writes the moov atom last: it is cut off
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    textfile = tmp_path / "notes.mp4"
    textfile.write_text("this is not a video\n")
    missing = tmp_path / "missing.mp4"
    bad = {str(corrupt), str(truncated), str(empty), str(textfile)}
    listed = [*good[:2], corrupt, good[2], truncated, missing, empty, good[3], textfile, good[4]]
    (tmp_path / "list.txt").write_text("".join(f"{p} 0\n" for p in listed))

    cfg = base_cfg(format="list", train=str(tmp_path / "list.txt"), max_retries=20)
    bad_file = tmp_path / "run" / "bad_files.txt"
    with caplog.at_level(logging.WARNING, logger="vidtok.data"):
        ds = build_dataset(cfg, "train", class_names=["c"], bad_files=bad_file)
    assert len(ds) == 9 and ds.missing == [str(missing)]
    for i in range(len(ds)):
        item = ds[i]
        assert item["path"] in {str(p) for p in good} and item["video"].shape == (3, 8, 24, 24)
    logged = read_bad_files(bad_file)
    assert {p for p, _ in logged} == bad  # every bad file recorded, no good file, no missing file
    assert all(reason for _, reason in logged) and ds.num_failures == len(logged) >= 4
    assert sum("skipping unreadable video" in r.getMessage() for r in caplog.records) == len(logged)

    # the same through worker processes: both append to one file, only good clips come out
    bad_file.unlink()
    ds_w = build_dataset(cfg, "train", class_names=["c"], bad_files=bad_file, seed=1)
    loader = build_loader(ds_w, cfg, train=False, num_workers=2, batch_size=3)
    paths = [p for batch in loader for p in batch["path"]]
    assert len(paths) == 9 and set(paths) <= {str(p) for p in good}
    assert {p for p, _ in read_bad_files(bad_file)} == bad

    # only bad files: bounded retries, then one clear error
    (tmp_path / "allbad.txt").write_text(f"{corrupt} 0\n{empty} 0\n")
    ds_bad = build_dataset(replace(cfg, train=str(tmp_path / "allbad.txt"), max_retries=3), "train", class_names=["c"])
    with pytest.raises(Exception, match=r"4 videos in a row failed to decode \(max_retries=3\)"):
        ds_bad[0]


def test_loader_reproducible_across_workers_and_epochs(synth):
    cfg = base_cfg(format="kinetics", root=str(synth), train=str(synth / "train.csv"), batch_size=4)
    ds = build_dataset(cfg, "train", seed=3)

    def run(num_workers: int, epoch: int) -> tuple[list[int], torch.Tensor]:
        loader = build_loader(ds, cfg, train=True, seed=3, num_workers=num_workers)
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert all(b["video"].shape == (4, 3, 8, 24, 24) for b in batches) and len(batches) == 3
        return [i for b in batches for i in b["index"].tolist()], torch.cat([b["video"] for b in batches])

    i0, v0 = run(0, epoch=1)
    i2, v2 = run(2, epoch=1)
    assert i0 == i2 and torch.equal(v0, v2)  # same seed + epoch: same order and same augmentation
    i_next, v_next = run(0, epoch=2)
    assert sorted(i_next) == sorted(i0) == list(range(12)) and i_next != i0
    order = torch.tensor(i0).argsort()
    assert not torch.equal(v0[order], v_next[torch.tensor(i_next).argsort()])


def test_repeated_sampling_decodes_once_gives_several_clips(synth):
    cfg = base_cfg(format="kinetics", root=str(synth), train=str(synth / "train.csv"), repeated_aug=2, batch_size=4)
    ds = build_dataset(cfg, "train")
    item = ds[0]
    assert isinstance(item, list) and len(item) == 2 and item[0]["index"] == item[1]["index"] == 0
    assert not torch.equal(item[0]["video"], item[1]["video"])
    batch = next(iter(build_loader(ds, cfg, train=True)))
    assert batch["video"].shape == (4, 3, 8, 24, 24)  # 2 videos x 2 clips
    idx = batch["index"].tolist()
    assert idx[0] == idx[1] and idx[2] == idx[3]
    with pytest.raises(ValueError, match=r"batch_size \(3\) must be a positive multiple of repeated_aug \(2\)"):
        build_loader(ds, cfg, train=True, batch_size=3)


def test_raw_frames_without_transform(synth):
    ds = VideoClipDataset(
        samples=[(str(videos(synth)[0][0]), 0)],
        class_names=["x"],
        train=False,
        transform=None,
        num_frames=4,
        frame_stride=1,
        test_clips=3,
        backend="pyav",
    )
    v = ds[0]["video"]
    assert v.shape == (3, 4, 32, 32, 3) and v.dtype == torch.uint8
    tf = TrainTransform(crop_size=16, scale_range=(16, 20))
    assert tf(v[0], torch.Generator().manual_seed(0)).shape == (3, 4, 16, 16)


@pytest.mark.parametrize("stride,distinct", [(3, 3), (9, 4)])
def test_test_sampler_places_the_views_by_the_peer_convention(synth, stride, distinct):
    """data.test_sampler: the dataset's test views are the frames (full PyAV decode) at the chosen convention's
    indices, and the conventions differ on the same video (24 frames: windows of 10 frames, where uniform and
    mmaction2 agree, and of 28, past the end, where each convention does its own thing)."""
    path = str(videos(synth)[0][0])
    full = decode_all(path)
    with open_video(path, "pyav") as v:
        n, fps = v.metadata.num_frames, v.metadata.fps
    assert n == len(full)
    seen = {}
    for name in TEST_SAMPLERS:
        ds = VideoClipDataset(
            samples=[(path, 0)],
            class_names=["x"],
            train=False,
            transform=None,
            num_frames=4,
            frame_stride=stride,
            test_clips=3,
            test_sampler=name,
            backend="pyav",
        )
        clips = eval_clips(name, n, fps, clip_len=4, frame_stride=stride, num_clips=3)
        idx = torch.stack([c.indices for c in clips])  # (3, 4)
        assert torch.equal(ds[0]["video"], torch.from_numpy(full[idx.numpy()])), name
        seen[name] = idx.tolist()
    assert len({str(v) for v in seen.values()}) == distinct, seen
    with pytest.raises(ConfigError, match=r"data.test_sampler.*'slowfast'"):
        validate_config(Config(data=base_cfg(test_sampler="slowfast")))


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (7, 2)])
def test_epoch_sampler_sharding(n, world):
    full = [list(EpochSampler(n, shuffle=True, seed=1, rank=r, world_size=world, pad=False)) for r in range(world)]
    flat = [i for shard in full for i, _ in shard]
    assert sorted(flat) == list(range(n))  # pad=False: each sample on exactly one rank
    padded = [EpochSampler(n, shuffle=True, seed=1, rank=r, world_size=world) for r in range(world)]
    lens = {len(list(s)) for s in padded}
    assert lens == {len(padded[0])} and len(padded[0]) == -(-n // world)
    s = EpochSampler(n, shuffle=True, seed=1)
    s.set_epoch(4)
    assert all(e == 4 for _, e in s)
    assert [i for i, _ in EpochSampler(n, shuffle=False)] == list(range(n))
    with pytest.raises(ValueError, match="need 0 <= rank < world_size, got rank=3 world_size=3"):
        EpochSampler(n, shuffle=True, rank=3, world_size=3)


def test_epoch_sampler_resumes_part_way_and_seeds_per_sample():
    s = EpochSampler(10, shuffle=True, seed=3, rank=1, world_size=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=2)  # the first two samples of this rank were consumed before the interruption
    assert list(s) == full[2:] and len(s) == len(full) - 2 and s.per_rank == len(full) == 4
    s.set_epoch(3)
    assert [i for i, _ in s] != [i for i, _ in full]  # another epoch, another permutation
    # a dataset drawing from the global RNG gets the same numbers for (index, epoch) wherever and whenever it is read
    from vidtok.data.loader import SeededDataset

    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(2)

    ds = SeededDataset(Noise(), seed=7)
    a = ds[(1, 0)]
    torch.rand(5)  # the global RNG moves on
    assert torch.equal(ds[(1, 0)], a) and not torch.equal(ds[(1, 1)], a) and not torch.equal(ds[(2, 0)], a)
    before = torch.get_rng_state()
    ds[(3, 0)]
    assert torch.equal(torch.get_rng_state(), before)  # restored: the caller's RNG stream is untouched
