"""Shared fixtures: tiny synthetic face folders, tiny configs and one session-trained checkpoint.

Everything here is small on purpose (48x48 JPEGs, 32 px models with widths [8, 16]) so the
whole suite stays fast on a busy 2-core machine.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agegender.config import DataConfig, ModelConfig, RunConfig, TrainConfig

# One intra-op thread: the models are tiny and the machine is shared with long training jobs.
torch.set_num_threads(1)

N_GOOD = 40
# Ages cover every age band and both ends of the 0..116 range.
AGES = (1, 5, 10, 15, 18, 22, 25, 28, 33, 36, 42, 45, 51, 55, 62, 68, 75, 85, 95, 116)
IMAGE_SIDE = 48


def face_jpeg(age: float, gender: int, seed: int, side: int = IMAGE_SIDE) -> bytes:
    """A noisy JPEG whose colour encodes gender and whose brightness encodes age (a learnable signal)."""
    rng = np.random.default_rng(seed)
    base = np.array([200.0, 80.0, 80.0]) if gender == 1 else np.array([80.0, 80.0, 200.0])
    base = base * (0.4 + 0.6 * age / 116)
    pixels = base + rng.normal(0, 25, size=(side, side, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class SyntheticUTKFace:
    path: Path
    good: tuple[str, ...]  # well-named, decodable images
    malformed: tuple[str, ...]  # names the UTKFace reader must skip
    duplicates: tuple[str, str]  # byte-identical pair with conflicting gender labels
    zero_byte: str  # valid name, empty file
    truncated: str  # valid name, truncated JPEG

    @property
    def parsed(self) -> tuple[str, ...]:
        """Every file whose name parses (decodable or not)."""
        return (*self.good, *self.duplicates, self.zero_byte, self.truncated)

    @property
    def undecodable(self) -> tuple[str, str]:
        return (self.zero_byte, self.truncated)


def make_utkface(folder: Path, n_good: int = N_GOOD) -> SyntheticUTKFace:
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for i in range(n_good):
        age, gender, race = AGES[i % len(AGES)], i % 2, i % 5
        name = f"{age}_{gender}_{race}_20170116{174525125 + i:09d}.jpg.chip.jpg"
        (folder / name).write_bytes(face_jpeg(age, gender, seed=i))
        good.append(name)
    jpeg = face_jpeg(40, 0, seed=1000)
    malformed = ("39_1_20170116174525125.jpg.chip.jpg", "24_0_1_20170116220224657 .jpg.chip.jpg")
    for name in malformed:
        (folder / name).write_bytes(jpeg)
    duplicates = ("26_0_0_20170101000000001.jpg.chip.jpg", "26_1_0_20170101000000002.jpg.chip.jpg")
    twin = face_jpeg(26, 0, seed=2000)
    for name in duplicates:
        (folder / name).write_bytes(twin)
    zero_byte = "30_0_0_20170101000000000.jpg.chip.jpg"
    (folder / zero_byte).write_bytes(b"")
    truncated = "31_1_3_20170101000000003.jpg.chip.jpg"
    full = face_jpeg(31, 1, seed=3000)
    (folder / truncated).write_bytes(full[: len(full) * 2 // 3])
    return SyntheticUTKFace(folder, tuple(good), malformed, duplicates, zero_byte, truncated)


LABELS_CSV = """filename,age,gender,age_group,race
img_00.jpg,25,male,20-29,White
img_01.jpg,31,F,30-39,1
img_02.jpg,,female,,asian
img_03.jpg,40,,40-49,
img_04.jpg,not-a-number,male,,0
missing.jpg,20,male,20-29,0
img_05.jpg,,,,
img_06.jpg,8,woman,0-12,Indian
img_07.jpg,70,m,70+,Others
img_08.jpg,52,0,50-59,2
img_09.jpg,19,1,13-19,3
img_10.jpg,63,MALE,60-69,white
img_11.jpg,35,female,30-39,black
"""


@dataclass(frozen=True)
class SyntheticLabelsFolder:
    path: Path
    n_usable: int  # rows that must become samples
    bad_lines: dict[int, str]  # csv line number -> file name of rows that must be skipped


def make_labels_folder(folder: Path) -> SyntheticLabelsFolder:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(12):
        (folder / f"img_{i:02d}.jpg").write_bytes(face_jpeg(20 + 3 * i, i % 2, seed=500 + i))
    (folder / "labels.csv").write_text(LABELS_CSV)
    # line 6: unparseable age; line 7: listed file missing; line 8: no labels at all
    return SyntheticLabelsFolder(folder, n_usable=10, bad_lines={6: "img_04.jpg", 7: "missing.jpg", 8: "img_05.jpg"})


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_home(tmp_path_factory):
    """Never let any test (or CLI subprocess) write to ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def face_bytes():
    """face_jpeg(age, gender, seed, side=48) -> JPEG bytes."""
    return face_jpeg


@pytest.fixture
def utkface(tmp_path) -> SyntheticUTKFace:
    return make_utkface(tmp_path / "utkface")


@pytest.fixture
def labels_folder(tmp_path) -> SyntheticLabelsFolder:
    return make_labels_folder(tmp_path / "labelled")


def tiny_config(data_path: Path, cache_dir: Path, *, epochs: int = 1, **train_changes) -> RunConfig:
    """32 px, widths [8, 16]: a model that trains an epoch on the synthetic folder in well under a second."""
    return RunConfig(
        data=DataConfig(path=str(data_path), image_size=32, cache_dir=str(cache_dir)),
        model=ModelConfig(widths=(8, 16), head_hidden=16),
        train=replace(TrainConfig(), epochs=epochs, batch_size=16, **train_changes),
    )


@pytest.fixture
def make_config():
    return tiny_config


@dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    data: SyntheticUTKFace
    config: RunConfig

    @property
    def best(self) -> Path:
        return self.run_dir / "best.safetensors"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """A 2-epoch run on the synthetic UTKFace folder, trained once and shared (read-only!)."""
    from rich.console import Console

    from agegender.training.fit import fit

    root = tmp_path_factory.mktemp("trained")
    data = make_utkface(root / "utkface")
    config = tiny_config(data.path, root / "cache", epochs=2)
    fit(config, root / "run", console=Console(file=io.StringIO()))
    return TrainedRun(root / "run", data, config)


@pytest.fixture
def faces_dir(tmp_path) -> Path:
    """Three face crops with arbitrary names (no labels), for prediction."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, (age, gender) in enumerate([(20, 0), (45, 1), (70, 0)]):
        (folder / f"face_{i}.jpg").write_bytes(face_jpeg(age, gender, seed=900 + i, side=40))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained 32 px checkpoint of a tiny custom CNN (for tests where the weights do not matter)."""
    from agegender.models.checkpoint import build_meta, save_checkpoint
    from agegender.models.registry import create_model

    model = create_model(ModelConfig(widths=(8, 16)))
    config = RunConfig(data=DataConfig(image_size=32), model=ModelConfig(widths=(8, 16)))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, model, build_meta(model, config, label_stats={"age_mean": 33.0}))
    return path


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run `agegender ARGS` in-process through cli.main (its error handling included): (code, stdout, stderr)."""
    from agegender.cli import main as cli_main

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["agegender", *map(str, args)])
        code = 0
        try:
            cli_main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


class StubFaceDetector:
    """A face detector for tests: no face in a (nearly) black image; otherwise a small face in the
    top-left corner and a big one in the middle (the largest: what `evaluate --detect` scores),
    whose keypoints are dropped for images with a bright top-left pixel (exercising the box fallback).
    """

    name = "stub"
    margin = 0.2

    def detect(self, rgb: np.ndarray) -> list:
        from agegender.inference.detectors.factory import Detection
        from agegender.inference.predictions import Box

        if rgb.max() < 20:
            return []
        height, width = rgb.shape[:2]
        x1, y1, x2, y2 = width // 4, height // 4, 3 * width // 4, 3 * height // 4
        keypoints = ((x1 + 0.3 * (x2 - x1), y1 + 0.35 * (y2 - y1)), (x1 + 0.7 * (x2 - x1), y1 + 0.35 * (y2 - y1)),
                     (x1 + 0.5 * (x2 - x1), y1 + 0.55 * (y2 - y1)), (x1 + 0.5 * (x2 - x1), y1 + 0.75 * (y2 - y1)))  # fmt: skip
        big = Detection(Box(x1, y1, x2, y2), 0.7, None if rgb[0, 0].min() > 250 else keypoints)
        return [Detection(Box(0, 0, 8, 8), 0.9), big]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list]:
        return [self.detect(rgb) for rgb in frames]


@dataclass(frozen=True)
class SyntheticPhotos:
    path: Path
    genders: dict[str, int]  # file -> 0 male / 1 female, every readable photo
    no_face: tuple[str, ...]  # black photos: the stub finds no face
    no_keypoints: tuple[str, ...]  # the stub's big face has no keypoints
    unreadable: str


def make_photo_folder(folder: Path) -> SyntheticPhotos:
    """LFW-like: 64x64 photos with a face_jpeg face in the middle, labels.csv with an identity column
    (and, unlike LFW, an age: 30 for everyone, so that age errors pin down which crop was scored)."""
    folder.mkdir(parents=True, exist_ok=True)
    genders = {}
    for i in range(7):
        photo = np.full((64, 64, 3), 90, np.uint8)
        photo[16:48, 16:48] = np.asarray(Image.open(io.BytesIO(face_jpeg(30, i % 2, seed=700 + i, side=32))))
        if i == 5:
            photo[:] = 0  # no face
        if i == 6:
            photo[0, 0] = 255  # no keypoints
        Image.fromarray(photo).save(folder / f"p{i}.png")
        genders[f"p{i}.png"] = i % 2
    (folder / "broken.png").write_bytes(b"not a png")
    rows = [f"{name},{'female' if g else 'male'},person_{name[1]},30" for name, g in genders.items()]
    (folder / "labels.csv").write_text("filename,gender,identity,age\n" + "\n".join(rows) + "\nbroken.png,male,x,30\n")
    return SyntheticPhotos(folder, genders, ("p5.png",), ("p6.png",), "broken.png")


@pytest.fixture
def photo_folder(tmp_path) -> SyntheticPhotos:
    return make_photo_folder(tmp_path / "photos")


@pytest.fixture
def stub_detector() -> StubFaceDetector:
    return StubFaceDetector()
