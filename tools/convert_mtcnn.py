"""One-off: facenet-pytorch's MTCNN state dicts -> src/agegender/assets/mtcnn.safetensors.

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/dl
    python tools/convert_mtcnn.py --wheel /tmp/dl/facenet_pytorch-2.6.0-py3-none-any.whl

The wheel (MIT) holds facenet_pytorch/data/{pnet,rnet,onet}.pt, plain state dicts of float32
tensors. They are read with torch.load(weights_only=True), which refuses anything but tensors and
containers, matched key by key and shape by shape against agegender.inference.detectors.mtcnn's networks
(strict load), and stored unchanged in value. Checked against the package's own networks by
tests/inference/test_mtcnn.py where facenet-pytorch is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from agegender.inference.detectors.mtcnn import NETWORKS, MtcnnNets, bundled_weights_path


def read_state_dicts(wheel: Path) -> dict[str, torch.Tensor]:
    state = {}
    with zipfile.ZipFile(wheel) as archive:
        for net in NETWORKS:
            member = f"facenet_pytorch/data/{net}.pt"
            data = archive.read(member)
            print(f"{member}: sha256 {hashlib.sha256(data).hexdigest()}")
            for key, tensor in torch.load(io.BytesIO(data), weights_only=True).items():
                state[f"{net}.{key}"] = tensor.float().contiguous()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="facenet_pytorch-2.6.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=bundled_weights_path())
    args = parser.parse_args()
    state = read_state_dicts(args.wheel)
    MtcnnNets().load_state_dict(state)  # strict: every key present, every shape right
    save_file(state, str(args.out), metadata={"source": "facenet-pytorch 2.6.0 (MIT)"})
    print(f"{args.out}: {len(state)} tensors, {sum(t.numel() for t in state.values()):,} parameters")


if __name__ == "__main__":
    main()
