"""Data-parallel training for real: two CPU processes under torchrun (gloo) on tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from agegender.config import load_config
from agegender.data.dataset import prepare_data
from agegender.models.checkpoint import load_checkpoint
from agegender.training.callbacks import HistoryCSV
from agegender.training.distributed import DistributedContext, epoch_shard, launch_ranks, resolve_device
from agegender.training.loop import evaluate_epoch
from agegender.training.losses import MultiTaskLoss
from tests.conftest import make_utkface, tiny_config

WORKER = """
import io, json, sys
from pathlib import Path
import torch
from rich.console import Console
from agegender.config import load_config
from agegender.training import fit as fit_module
from agegender.training.distributed import launch_ranks

torch.set_num_threads(1)
rank, final = launch_ranks()[0], {}
train_epochs = fit_module.train_epochs


def recording_train_epochs(state, *args):  # each rank's weights when training ends
    train_epochs(state, *args)
    final.update({k: float(v.double().sum()) for k, v in state.model.state_dict().items()})


fit_module.train_epochs = recording_train_epochs
run_dir = Path(sys.argv[2])
result = fit_module.fit(load_config(Path(sys.argv[1])), run_dir, console=Console(file=io.StringIO()))
report = {"best_epoch": result.best_epoch, "stopped": result.stopped_epoch, "weights": final}
(run_dir.parent / f"rank{rank}.json").write_text(json.dumps(report))
"""


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
    config_path = tmp_path / "config.yaml"
    from agegender.config import save_config

    save_config(tiny_config(data.path, tmp_path / "cache", epochs=2), config_path)
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "worker.py"), str(config_path), str(tmp_path / "run")]  # fmt: skip
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # both finished with identical weights and the same view of the run
    saved = load_file(str(tmp_path / "run" / "last.safetensors"))  # written by rank 0 alone
    assert ranks[0]["weights"] == pytest.approx({k: float(v.double().sum()) for k, v in saved.items()}, rel=1e-6)
    rows = HistoryCSV(tmp_path / "run" / "history.csv").rows()
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # written once, by rank 0

    # the val metrics the two ranks computed together equal one process evaluating the checkpoint
    config = load_config(tmp_path / "run" / "config.yaml")
    last = load_checkpoint(tmp_path / "run" / "last.safetensors")
    single = evaluate_epoch(last.model, prepare_data(config.data).val, MultiTaskLoss.from_config(config.train))
    assert float(rows[-1]["val_loss"]) == pytest.approx(single.loss, rel=1e-4)
    assert float(rows[-1]["val_age_mae"]) == pytest.approx(single.age_mae, rel=1e-4)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split_sizes"]["train"] == len(prepare_data(config.data).train)
