#!/usr/bin/python3
"""Exports a residual model of the repository (default fmnist-resnet) to ONNX.

Usage: /usr/bin/python3 bench/ort/export.py [--model_dir repository/models/fmnist-resnet]
           [--out var/ort/fmnist-resnet.onnx] [--exits 0,2,8] [--check_samples 10000]

Debian's python3-torch and python3-onnx; no network. The project has no ONNX
exporter (it imports ONNX, model/onnx_import.*), so the architecture is
rebuilt here from the manifest's backbone config, as model/network.cc builds
it, and the weights are read from backbone.pt and exits.pt: LibTorch C++
archives of torch::nn modules, which torch.jit.load reads (parameter and
buffer names as in the C++ modules).

Writes:
  <out>                 the full network (final classifier only): input
                        "input" N x 1 x 28 x 28, already normalised
                        ((pixel/255 - mean) / std); output "logits" N x 10.
                        Batch norm folded by the exporter (eval mode).
                        metadata_props hapi.mean/hapi.std/hapi.class_names/
                        hapi.dataset, as hapi-import reads them.
  <out>.exits.onnx      with --exits: the same graph with those exits' logits
                        as extra outputs "exit<k>" (before "logits"), so one
                        session can run an early-exit design's heads; ORT runs
                        the whole graph, so this measures the heads' cost, not
                        early stopping.
  <out>.torch-logits.bin  float32 N x 10, PyTorch's (unfolded BN) logits of
                        the first --check_samples test images, and
  <out>.input.bin       those images normalised (float32 N x 1 x 28 x 28), for
                        bench/ort/check.js to compare ONNX Runtime against.
"""

import argparse
import gzip
import os
import re
import struct

import numpy as np
import onnx
import torch
from torch import nn

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def parse_manifest(path):
    """The few fields the architecture needs, from manifest.pbtxt."""
    text = open(path).read()
    backbone = re.search(r"\nbackbone \{(.*?)\n\}", text, re.S).group(1)

    def ints(name):
        return [int(v) for v in re.findall(rf"\b{name}: (-?\d+)", backbone)]

    cfg = {
        "stem_channels": ints("stem_channels")[0],
        "widths": ints("widths"),
        "blocks_per_group": ints("blocks_per_group"),
        "num_classes": ints("num_classes")[0],
        "exit_conv_channels": (ints("exit_conv_channels") or [0])[0],
        "exit_conv_min_size": (ints("exit_conv_min_size") or [0])[0],
    }
    top = re.sub(r"\n(\w+) \{.*?\n\}", "", text, flags=re.S)  # top-level scalars only
    m = re.search(r"\binput_mean: ([-\d.e]+)", top)
    s = re.search(r"\binput_std: ([-\d.e]+)", top)
    cfg["mean"] = float(m.group(1)) if m else 0.0
    cfg["std"] = float(s.group(1)) if s else 1.0
    cfg["class_names"] = re.findall(r'^class_names: "(.*)"$', text, re.M)
    ds = re.search(r'^dataset: "(.*)"$', text, re.M)
    cfg["dataset"] = ds.group(1) if ds else ""
    if re.search(r"^input \{", text, re.M):
        raise SystemExit("manifest has an input spec: this exporter handles the legacy 1x28x28 input only")
    return cfg


def conv(cin, cout, k, stride):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class Block(nn.Module):
    """model/network.cc ResidualBlockImpl."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout, 3, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.projection = stride != 1 or cin != cout
        if self.projection:
            self.shortcut_conv = conv(cin, cout, 1, stride)
            self.shortcut_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = self.shortcut_bn(self.shortcut_conv(x)) if self.projection else x
        return torch.relu(out + sc)


def adaptive_avg_pool(x, out, h, w):
    """nn.AdaptiveAvgPool2d written out with slices and means: the ONNX exporter
    refuses output sizes that do not divide the input (14 -> 4, 7 -> 2 here).
    Bins as PyTorch's: [floor(i*in/out), ceil((i+1)*in/out)). h and w are
    plain ints (not traced shapes), so the graph has constant slices."""
    if h % out == 0 and w % out == 0:
        return nn.functional.adaptive_avg_pool2d(x, out)
    rows = []
    for i in range(out):
        r0, r1 = (i * h) // out, -((-(i + 1) * h) // out)
        cols = []
        for j in range(out):
            c0, c1 = (j * w) // out, -((-(j + 1) * w) // out)
            cols.append(x[:, :, r0:r1, c0:c1].mean(dim=(2, 3), keepdim=True))
        rows.append(torch.cat(cols, dim=3))
    return torch.cat(rows, dim=2)


class Head(nn.Module):
    """model/network.cc ExitHeadImpl."""

    def __init__(self, channels, size, conv_channels, pool, classes):
        super().__init__()
        self.pooled_size = (size + 2 - 3) // 2 + 1 if conv_channels > 0 else size
        self.has_conv = conv_channels > 0
        pooled = channels
        if self.has_conv:
            self.conv = conv(channels, conv_channels, 3, 2)
            self.bn = nn.BatchNorm2d(conv_channels)
            pooled = conv_channels
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Linear(pooled * pool * pool, classes)

    def forward(self, x):
        if self.has_conv:
            x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(adaptive_avg_pool(x, self.pool.output_size, self.pooled_size, self.pooled_size), 1))


class Network(nn.Module):
    """Backbone (names as BackboneImpl: stages.<i>.0..., classifier) and exit heads."""

    def __init__(self, cfg, side=28):
        super().__init__()
        stages = [nn.Sequential(conv(1, cfg["stem_channels"], 3, 1), nn.BatchNorm2d(cfg["stem_channels"]), nn.ReLU())]
        shapes = [(cfg["stem_channels"], side)]
        ch, size = cfg["stem_channels"], side
        for g, width in enumerate(cfg["widths"]):
            for b in range(cfg["blocks_per_group"][g]):
                stride = 2 if g > 0 and b == 0 else 1
                stages.append(nn.Sequential(Block(ch, width, stride)))
                size = (size + 2 - 3) // stride + 1
                ch = width
                shapes.append((ch, size))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(ch, cfg["num_classes"])
        heads = []
        for channels, size in shapes[:-1]:  # model/network.cc ExitHeadShape
            has_conv = cfg["exit_conv_channels"] > 0 and size > cfg["exit_conv_min_size"]
            s = (size + 2 - 3) // 2 + 1 if has_conv else size
            pool = 4 if s >= 8 else 2
            heads.append(Head(channels, size, cfg["exit_conv_channels"] if has_conv else 0, pool, cfg["num_classes"]))
        self.heads = nn.ModuleList(heads)
        self.exits = []  # exits whose logits forward() also returns

    def forward(self, x):
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.exits:
                outs.append(self.heads[i](x))
        # Global average pool as GlobalAveragePool + Flatten (hapi-import takes
        # those, not ReduceMean, which torch.mean exports to).
        logits = self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
        return tuple(outs) + (logits,) if outs else logits


def load_weights(net, model_dir):
    state = {}
    backbone = torch.jit.load(os.path.join(model_dir, "backbone.pt"), map_location="cpu")
    for k, v in list(backbone.named_parameters()) + list(backbone.named_buffers()):
        state[k] = v.detach().clone()
    exits = torch.jit.load(os.path.join(model_dir, "exits.pt"), map_location="cpu")
    for k, v in list(exits.named_parameters()) + list(exits.named_buffers()):
        state["heads." + k] = v.detach().clone()
    missing, unexpected = net.load_state_dict(state, strict=True), None
    return net


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise SystemExit(f"{path}: not an IDX3 image file (package dataset-fashion-mnist)")
        return np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, 1, rows, cols)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", default="repository/models/fmnist-resnet")
    ap.add_argument("--out", default="var/ort/fmnist-resnet.onnx")
    ap.add_argument("--exits", default="", help="comma-separated exits for <out>.exits.onnx")
    ap.add_argument("--check_samples", type=int, default=10000)
    ap.add_argument("--data_dir", default=DATA_DIR)
    ap.add_argument("--opset", type=int, default=13)
    a = ap.parse_args()

    torch.manual_seed(0)
    cfg = parse_manifest(os.path.join(a.model_dir, "manifest.pbtxt"))
    net = load_weights(Network(cfg), a.model_dir).eval()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)

    meta = {
        "hapi.mean": repr(cfg["mean"]),
        "hapi.std": repr(cfg["std"]),
        "hapi.class_names": ",".join(cfg["class_names"]),
        "hapi.dataset": cfg["dataset"],
        "hapi.source": os.path.basename(os.path.normpath(a.model_dir)),
    }

    def export(path, exits):
        net.exits = exits
        outputs = [f"exit{e}" for e in exits] + ["logits"]
        dummy = torch.zeros(1, 1, 28, 28)
        with torch.no_grad():
            torch.onnx.export(net, dummy, path, input_names=["input"], output_names=outputs,
                              dynamic_axes={n: {0: "batch"} for n in ["input"] + outputs},
                              opset_version=a.opset, do_constant_folding=True)
        m = onnx.load(path)
        for k, v in meta.items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.checker.check_model(m)
        onnx.save(m, path)
        ops = {}
        for node in m.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        print(f"wrote {path} ({os.path.getsize(path)} bytes): {dict(sorted(ops.items()))}")

    export(a.out, [])
    if a.exits:
        export(a.out + ".exits.onnx", [int(e) for e in a.exits.split(",")])
    net.exits = []

    images = read_idx_images(os.path.join(a.data_dir, "t10k-images-idx3-ubyte.gz"))[: a.check_samples]
    x = (torch.from_numpy(images.astype(np.float32)) / 255.0 - cfg["mean"]) / cfg["std"]
    with torch.no_grad():
        logits = torch.cat([net(x[i:i + 500]) for i in range(0, len(x), 500)])
    x.numpy().astype("<f4").tofile(a.out + ".input.bin")
    logits.numpy().astype("<f4").tofile(a.out + ".torch-logits.bin")
    print(f"wrote {a.out}.input.bin and {a.out}.torch-logits.bin ({len(x)} test images)")


if __name__ == "__main__":
    main()
