"""Data-parallel training for real: two CPU processes under torchrun (gloo) on tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from agegender.config import ModelConfig, load_config
from agegender.data.dataset import prepare_data
from agegender.models.checkpoint import load_checkpoint
from agegender.training.callbacks import HistoryCSV
from agegender.training.distributed import DistributedContext, epoch_shard, launch_ranks, resolve_device
from agegender.training.engine import evaluate
from agegender.training.losses import MultiTaskLoss
from agegender.training.sources import ImageBatches
from tests.conftest import make_utkface, tiny_config
from tests.models.test_pretrained import write_random_weights

CPU = torch.device("cpu")

WORKER = """
import io, json, sys
from pathlib import Path
import torch
from rich.console import Console
from agegender.config import ModelConfig, load_config
from agegender.training import fit as fit_module
from agegender.training.distributed import launch_ranks

torch.set_num_threads(1)
rank, final, cached = launch_ranks()[0], {}, []
train_phases, build_cached_sources = fit_module.Training.train_phases, fit_module.build_cached_sources


def recording_train_phases(self, *args):  # each rank's weights when training ends
    summaries = train_phases(self, *args)
    final.update({k: float(v.double().sum()) for k, v in self.model.state_dict().items()})
    return summaries


def recording_build_cached_sources(*args):  # how many images each rank cached
    sources = build_cached_sources(*args)
    cached.extend([len(train), len(val)] for train, val in sources.values())
    return sources


fit_module.Training.train_phases = recording_train_phases
fit_module.build_cached_sources = recording_build_cached_sources
run_dir = Path(sys.argv[2])
result = fit_module.fit(load_config(Path(sys.argv[1])), run_dir, console=Console(file=io.StringIO()))
report = {"best_epoch": result.best_epoch, "stopped": result.stopped_epoch, "weights": final}
(run_dir.parent / f"rank{rank}.json").write_text(json.dumps(report))
(run_dir.parent / f"cached{rank}.json").write_text(json.dumps(cached))
"""


def train_under_torchrun(config, tmp_path) -> list[dict]:
    """fit() in two CPU processes; each rank's report (best epoch, stopped epoch, weight sums)."""
    from agegender.config import save_config

    save_config(config, tmp_path / "config.yaml")
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "worker.py"), str(tmp_path / "config.yaml"), str(tmp_path / "run")]  # fmt: skip
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def assert_ranks_agree_with_one_process(ranks: list[dict], run_dir, source_of) -> list[dict]:
    """Both ranks end with rank 0's saved weights, and the val metrics they computed together equal
    one process evaluating the last checkpoint (`source_of(val arrays)` feeds it)."""
    assert ranks[0] == ranks[1]  # both finished with identical weights and the same view of the run
    saved = load_file(str(run_dir / "last.safetensors"))  # written by rank 0 alone
    assert ranks[0]["weights"] == pytest.approx({k: float(v.double().sum()) for k, v in saved.items()}, rel=1e-6)
    rows = HistoryCSV(run_dir / "history.csv").rows()
    config = load_config(run_dir / "config.yaml")
    last = load_checkpoint(run_dir / "last.safetensors")
    single = evaluate(last.model, source_of(prepare_data(config.data).val), MultiTaskLoss.from_config(config.train))
    assert float(rows[-1]["val_loss"]) == pytest.approx(single.loss, rel=1e-4)
    assert float(rows[-1]["val_age_mae"]) == pytest.approx(single.age_mae, rel=1e-4)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split_sizes"]["train"] == len(prepare_data(config.data).train)
    return rows


def test_launch_variables_and_device_choice():
    assert launch_ranks({}) == (0, 1, 0)
    assert launch_ranks({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown train.device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_epoch_shards_cover_every_image_like_distributed_sampler():
    shards = [epoch_shard(7, DistributedContext(rank, 2), torch.Generator().manual_seed(3)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4  # padded to a multiple of the world size
    assert set(torch.cat(shards).tolist()) == set(range(7))


def test_two_processes_train_one_model_and_agree_with_a_single_process_evaluation(tmp_path):
    data = make_utkface(tmp_path / "utkface")
    ranks = train_under_torchrun(tiny_config(data.path, tmp_path / "cache", epochs=2), tmp_path)
    rows = assert_ranks_agree_with_one_process(ranks, tmp_path / "run", lambda val: ImageBatches(val, None, True, CPU))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # written once, by rank 0


def test_two_processes_fine_tune_a_pretrained_model_in_two_phases(tmp_path):
    data = make_utkface(tmp_path / "utkface")
    write_random_weights("efficientnet_lite0", tmp_path / "lite0.pth")
    config = tiny_config(data.path, tmp_path / "cache", epochs=1, feature_views=2)
    config = replace(config, model=ModelConfig(name="efficientnet_lite0", head_hidden=8, weights=str(tmp_path / "lite0.pth"),
                                               unfreeze_blocks=2))  # fmt: skip
    ranks = train_under_torchrun(config, tmp_path)
    rows = assert_ranks_agree_with_one_process(ranks, tmp_path / "run", lambda val: ImageBatches(val, None, True, CPU))
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "phase1"), ("2", "phase2")]
    prepared = prepare_data(config.data)
    cached = [json.loads((tmp_path / f"cached{r}.json").read_text()) for r in (0, 1)]
    assert [len(c) for c in cached] == [2, 2]  # per rank, one pass cached both phases' activations
    n_train, n_val = len(prepared.train), len(prepared.val)
    assert [c[0][0] for c in cached] == [-(-n_train // 2)] * 2  # each rank its padded half of the training images
    assert sum(c[0][1] for c in cached) == n_val  # and its share of val, which the ranks evaluate together
