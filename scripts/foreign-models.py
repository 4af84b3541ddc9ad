#!/usr/bin/python3
"""Foreign architectures for scripts/foreign-models.sh (docs/onnx-import.md).

Usage (Debian's python3-torch 1.13, python3-torchvision 0.14, python3-pil;
no network, no pretrained weights):

  /usr/bin/python3 scripts/foreign-models.py folder --out var/foreign/fmnist-rgb32
      Fashion-MNIST as an image folder of RGB PNGs, 32x32 (each 28x28 grey
      image resized bilinearly by PIL to 32x32 and replicated into R, G, B):
        train/<class>/  the first TRAIN (10,000) images of the official
                        training set
        val/<class>/    the last VAL (2,000) images of the official training
                        set (disjoint from train/)
        test/<class>/   the first TEST (2,000) images of the official test set
      Class folders are 00-tshirt .. 09-boot so that byte order is label order.

  /usr/bin/python3 scripts/foreign-models.py train --model resnet18 \\
      --folder var/foreign/fmnist-rgb32 --out var/foreign/onnx/resnet18.onnx
      Builds the model, trains it on the folder's train/ PNGs (SGD momentum
      0.9, lr 0.05 with cosine decay, batch 64, weight decay 5e-4, random
      horizontal flip; --limit images, --epochs epochs, --max_seconds wall
      clock cap, torch.set_num_threads(--threads)), reports val accuracy, and
      exports ONNX (opset 13, eval mode, dynamic batch) with hapi.mean,
      hapi.std, hapi.class_names and hapi.dataset in metadata_props. What was
      actually trained is printed and written to <out>.train.json. The
      trained weights go to <out without .onnx>.pt (a state_dict) and the
      reference outputs (below) to <out>.reference.json.

  /usr/bin/python3 scripts/foreign-models.py reference --model resnet18 \\
      --folder var/foreign/fmnist-rgb32 --out var/foreign/onnx/resnet18.onnx
      Rebuilds <out>.reference.json from the saved state_dict (<out without
      .onnx>.pt) without retraining: PyTorch's logits (eval mode) for 1,000
      images of the folder's test split (the fixed-seed order of load_split:
      all classes), preprocessed as in training (RGB, /255, (x - mean) / std).
      The file is a hapi.v1.ReferenceOutputs (proto/hapi/v1/reference.proto)
      in protobuf's JSON mapping; hapi-check-reference runs the imported
      graph on the same images and compares.

  /usr/bin/python3 scripts/foreign-models.py default-reference \\
      --onnx var/ort/fmnist-resnet.onnx --images var/foreign/fmnist-test1k
      The project's own default model, exported by bench/ort/export.py: its
      PyTorch logits for the first 1,000 Fashion-MNIST test images (from
      <onnx>.torch-logits.bin) as <onnx>.reference.json, and those images as
      grey 28x28 PNGs under --images (written only when absent).

  /usr/bin/python3 scripts/foreign-models.py report --run DIR --variant ID \\
      --model_dir DIR
      The job's report (scripts/foreign-models.sh): the served variant against
      the full network, HAPI's search against exhaustive's, and the per-exit
      table (accuracy from the model's report.md, latency to each exit from
      the run's profile: batch-1 stage medians up to it plus its head's).

Models (3x32x32 input, 10 classes):
  resnet18     torchvision.models.resnet18(num_classes=10), stem adapted to
               32x32: conv1 3x3 stride 1 padding 1, maxpool removed
  mobilenetv2  torchvision.models.mobilenet_v2(width_mult=0.5,
               num_classes=10), first conv stride 1 (a 32x32 input then ends at
               2x2 rather than 1x1)
  vgg          plain VGG-style: [32,32,M,64,64,M,128,128,M] conv3x3-BN-ReLU,
               flatten, linear 2048->256, ReLU, dropout, linear 256->10
"""

import argparse
import gzip
import json
import math
import os
import time

import numpy as np

CLASSES = ["00-tshirt", "01-trouser", "02-pullover", "03-dress", "04-coat",
           "05-sandal", "06-shirt", "07-sneaker", "08-bag", "09-boot"]
MEAN = [0.286, 0.286, 0.286]
STD = [0.353, 0.353, 0.353]
IDX_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_folder(args):
    from PIL import Image
    tr_x = read_idx(f"{args.idx_dir}/train-images-idx3-ubyte.gz")
    tr_y = read_idx(f"{args.idx_dir}/train-labels-idx1-ubyte.gz")
    te_x = read_idx(f"{args.idx_dir}/t10k-images-idx3-ubyte.gz")
    te_y = read_idx(f"{args.idx_dir}/t10k-labels-idx1-ubyte.gz")
    splits = {
        "train": (tr_x[:args.train], tr_y[:args.train]),
        "val": (tr_x[-args.val:], tr_y[-args.val:]),
        "test": (te_x[:args.test], te_y[:args.test]),
    }
    tmp = args.out + ".tmp"
    for split, (xs, ys) in splits.items():
        for c in CLASSES:
            os.makedirs(f"{tmp}/{split}/{c}", exist_ok=True)
        for i, (x, y) in enumerate(zip(xs, ys)):
            img = Image.fromarray(x, "L").resize((32, 32), Image.BILINEAR).convert("RGB")
            img.save(f"{tmp}/{split}/{CLASSES[y]}/{i:05d}.png")
        print(f"{split}: {len(xs)} images")
    os.rename(tmp, args.out)


def split_order(folder, split, limit=0):
    """The split's images (paths relative to the folder) and labels, in a
    fixed-seed order (all classes mixed); the first `limit` if given."""
    xs, ys = [], []
    for label, c in enumerate(CLASSES):
        d = f"{folder}/{split}/{c}"
        for name in sorted(os.listdir(d)):
            xs.append(f"{split}/{c}/{name}")
            ys.append(label)
    order = np.random.RandomState(1).permutation(len(xs))
    if limit:
        order = order[:limit]
    return [xs[i] for i in order], [ys[i] for i in order]


def load_split(folder, split, limit=0, with_paths=False):
    from PIL import Image
    paths, labels = split_order(folder, split, limit)
    imgs = np.stack([np.asarray(Image.open(f"{folder}/{p}").convert("RGB")) for p in paths])
    x = imgs.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    y = np.array(labels, np.int64)
    return (x, y, paths) if with_paths else (x, y)


REFERENCE_IMAGES = 1000


def write_reference(path, model_name, framework, image_root, images, labels, logits):
    """A hapi.v1.ReferenceOutputs (proto/hapi/v1/reference.proto) in
    protobuf's JSON mapping. Each float32 logit is written as the shortest
    decimal that reads back as the same float32."""
    logits = np.asarray(logits, np.float32)
    msg = {"model": model_name, "framework": framework, "imageRoot": image_root,
           "images": list(images), "labels": [int(v) for v in labels],
           "classes": int(logits.shape[1]),
           "logits": [float(np.format_float_positional(v, unique=True, trim="0").rstrip("."))
                      if np.isfinite(v) else float(v) for v in logits.reshape(-1)]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(msg, f)
    os.rename(tmp, path)
    print(f"wrote {path}: {len(images)} images x {logits.shape[1]} classes ({framework})")


def reference_from_model(model, model_name, folder, out):
    """PyTorch's logits (eval mode) for the first REFERENCE_IMAGES images of
    the folder's test split (split_order), preprocessed as in training."""
    import torch
    x, y, paths = load_split(folder, "test", REFERENCE_IMAGES, with_paths=True)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model((torch.from_numpy(x[b:b + 100]) - mean) / std)
                            for b in range(0, len(x), 100)]).numpy()
    acc = float((logits.argmax(1) == y).mean())
    write_reference(out + ".reference.json", model_name, f"pytorch {torch.__version__}",
                    folder, paths, y, logits)
    print(f"PyTorch top-1 accuracy on those images: {100 * acc:.2f}%")


def weights_path(onnx_path):
    return (onnx_path[:-5] if onnx_path.endswith(".onnx") else onnx_path) + ".pt"


def reference(args):
    import torch
    torch.set_num_threads(args.threads)
    pt = weights_path(args.out)
    if not os.path.exists(pt):
        raise SystemExit(f"{pt} is missing: retrain (scripts/foreign-models.py train) to "
                         f"get the weights the reference comes from")
    model = build(args.model)
    model.load_state_dict(torch.load(pt))
    reference_from_model(model, args.model, args.folder, args.out)


def default_reference(args):
    """The default model's reference: bench/ort/export.py's PyTorch logits
    of the first Fashion-MNIST test images, and those images as PNGs."""
    import torch
    from PIL import Image
    n = args.count
    logits = np.fromfile(args.onnx + ".torch-logits.bin", "<f4")
    if logits.size < n * args.classes:
        raise SystemExit(f"{args.onnx}.torch-logits.bin has {logits.size // args.classes} "
                         f"rows, fewer than {n}: re-run bench/ort/export.py")
    logits = logits[:n * args.classes].reshape(n, args.classes)
    xs = read_idx(f"{args.idx_dir}/t10k-images-idx3-ubyte.gz")[:n]
    ys = read_idx(f"{args.idx_dir}/t10k-labels-idx1-ubyte.gz")[:n]
    names = [f"test/{i:05d}.png" for i in range(n)]
    if not os.path.isdir(args.images):
        tmp = args.images + ".tmp"
        os.makedirs(f"{tmp}/test", exist_ok=True)
        for name, x in zip(names, xs):
            Image.fromarray(x, "L").save(f"{tmp}/{name}")
        os.rename(tmp, args.images)
    write_reference(args.onnx + ".reference.json", "fmnist-resnet",
                    f"pytorch {torch.__version__} (bench/ort/export.py)", args.images, names,
                    ys, logits)
    print(f"PyTorch top-1 accuracy on those images: "
          f"{100 * float((logits.argmax(1) == ys).mean()):.2f}%")


def build(name):
    import torch.nn as nn
    import torchvision
    if name == "resnet18":
        m = torchvision.models.resnet18(num_classes=10)
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
        return m
    if name == "mobilenetv2":
        m = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10)
        m.features[0][0].stride = (1, 1)
        return m
    if name == "vgg":
        layers, cin = [], 3
        for v in [32, 32, "M", 64, 64, "M", 128, 128, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v),
                           nn.ReLU(inplace=True)]
                cin = v
        return nn.Sequential(*layers, nn.Flatten(1), nn.Linear(128 * 16, 256),
                             nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(256, 10))
    raise SystemExit(f"unknown model {name}")


def train(args):
    import onnx
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    x, y = load_split(args.folder, "train", args.limit)
    vx, vy = load_split(args.folder, "val")
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    model = build(args.model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    steps = args.epochs * math.ceil(len(x) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps,
                                                pct_start=0.15)
    start, seen, step, stopped = time.time(), 0, 0, False
    for epoch in range(args.epochs):
        model.train()
        perm = np.random.permutation(len(x))
        for b in range(0, len(x), args.batch):
            idx = perm[b:b + args.batch]
            xb = torch.from_numpy(x[idx])
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(3)
            loss = F.cross_entropy(model((xb - mean) / std), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            step += 1
            if step % 20 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} "
                      f"{time.time() - start:.0f} s", flush=True)
            if args.max_seconds and time.time() - start > args.max_seconds:
                stopped = True
                break
        if stopped:
            break
    train_s = time.time() - start
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model((torch.from_numpy(vx[b:b + 256]) - mean) / std).argmax(1)
                          for b in range(0, len(vx), 256)])
    val_acc = float((pred.numpy() == vy).mean())
    info = {"model": args.model, "train_images": int(len(x)), "epochs": args.epochs,
            "samples_seen": seen, "steps": step, "planned_steps": steps,
            "stopped_by_time_cap": stopped, "train_seconds": round(train_s, 1),
            "threads": args.threads, "batch": args.batch, "lr": args.lr,
            "val_acc_pytorch": val_acc, "val_images": int(len(vx))}
    print(json.dumps(info))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    torch.onnx.export(model, torch.zeros(1, 3, 32, 32), tmp, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      do_constant_folding=True)
    m = onnx.load(tmp)
    for k, v in {"hapi.mean": ",".join(map(str, MEAN)), "hapi.std": ",".join(map(str, STD)),
                 "hapi.class_names": ",".join(CLASSES), "hapi.dataset": "fashion-mnist-rgb32",
                 "hapi.training": json.dumps(info)}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, tmp)
    torch.save(model.state_dict(), weights_path(args.out))
    reference_from_model(model, args.model, args.folder, args.out)
    os.rename(tmp, args.out)
    with open(args.out + ".train.json", "w") as f:
        json.dump(info, f, indent=1)


def report(args):
    """The job's report: the served variant against the full network, HAPI's
    search against exhaustive's, and the per-exit table for the docs."""
    import glob
    import re
    run = args.run
    ee = json.load(open(f"{run}/bench-early-exit.json"))
    full = json.load(open(f"{run}/bench-full.json"))

    def field(text, name):
        m = re.search(name + r" \{(.*?)\}", text, re.S)
        return m.group(1) if m else ""

    def num(text, name):
        m = re.search(r"\b" + name + r": ([-0-9.e+]+)", text)
        return float(m.group(1)) if m else float("nan")

    hapi = open(f"{run}/variant.pbtxt").read()
    exh = open(f"{run}/variant-exhaustive.pbtxt").read()
    # Top-level fields only (a variant may hold nested designs, e.g. per
    # precision, with fields of the same names).
    exits = re.findall(r"^enabled_exits: (\d+)", hapi, re.M)
    exh_exits = re.findall(r"^enabled_exits: (\d+)", exh, re.M)
    thresholds = re.findall(r"^thresholds: ([0-9.e-]+)", hapi, re.M)
    total = sum(ee["exits"].values())
    dist = ", ".join(f"exit {k}: {100 * v / total:.1f}%"
                     for k, v in sorted(ee["exits"].items(), key=lambda kv: int(kv[0])))
    h_ms = num(field(hapi, "predicted_latency"), "mean_ms")
    x_ms = num(field(exh, "predicted_latency"), "mean_ms")
    f_ms = num(field(hapi, "full_network_latency"), "mean_ms")
    mean_ee, mean_full = ee["latency_ms"]["mean"], full["latency_ms"]["mean"]
    precision = (re.findall(r"^precision: (\w+)", hapi, re.M) or ["FP32"])[0].lower()
    print(f"variant            {args.variant} ({precision}, enabled exits "
          f"{', '.join(exits) or 'none'}; thresholds {', '.join(thresholds)})")
    for c in re.findall(r"^precision_candidates \{(.*?)^\}", hapi, re.M | re.S):
        name = (re.findall(r"precision: (\w+)", c) or ["FP32"])[0].lower()
        c_exits = re.findall(r"^  enabled_exits: (\d+)", c, re.M)
        if "mean_ms" in c:
            print(f"  {name:5} candidate  exits {', '.join(c_exits) or 'none'}: validation "
                  f"{100 * num(c, 'predicted_accuracy'):.2f}%, predicted mean "
                  f"{num(c, 'mean_ms'):.3f} ms")
        else:
            note = (re.findall(r'note: "(.*)"', c) or ["no design"])[0]
            print(f"  {name:5} candidate  {note}")
    print(f"predicted (val)    accuracy {100 * num(hapi, 'predicted_accuracy'):.2f}% vs full "
          f"{100 * num(hapi, 'final_exit_accuracy'):.2f}%; mean {h_ms:.3f} ms vs full "
          f"{f_ms:.3f} ms ({f_ms / h_ms:.2f}x); design's test accuracy "
          f"{100 * num(hapi, 'test_accuracy'):.2f}%")
    print(f"exhaustive         enabled exits {', '.join(exh_exits) or 'none'}; predicted mean "
          f"{x_ms:.3f} ms, accuracy {100 * num(exh, 'predicted_accuracy'):.2f}%; HAPI's gap "
          f"{100 * (h_ms / x_ms - 1):+.2f}% "
          f"({num(field(hapi, 'search'), 'designs_evaluated'):.0f} vs "
          f"{num(field(exh, 'search'), 'designs_evaluated'):.0f} designs evaluated)")
    print(f"test accuracy      early-exit {100 * ee['accuracy']:.2f}%   full network "
          f"{100 * full['accuracy']:.2f}% ({total} images of the folder's test split)")
    print(f"exit distribution  {dist}")
    print(f"latency (client)   early-exit p50 {ee['latency_ms']['p50']:.3f} ms, "
          f"p99 {ee['latency_ms']['p99']:.3f} ms; full network p50 "
          f"{full['latency_ms']['p50']:.3f} ms, p99 {full['latency_ms']['p99']:.3f} ms")
    print(f"mean latency       early-exit {mean_ee:.3f} ms, full network {mean_full:.3f} ms "
          f"(client-side): speedup {mean_full / mean_ee:.2f}x")
    # Per exit: accuracies from the model's report (fp32), latency to the
    # exit from this machine's profile (batch 1: medians of the stages up to
    # it plus its head), per precision profiled.
    prof = open(glob.glob(f"{run}/*.profile.pbtxt")[0]).read()
    lat = {}
    for b in prof.split("batches {")[1:]:
        if not re.search(r"^  batch_size: 1$", b, re.M):
            continue
        name = "int8" if re.search(r"^  precision: INT8", b, re.M) else "fp32"
        stages = [float(x) for x in re.findall(r"stages \{\s*median_s: ([0-9.e-]+)", b)]
        heads = [float(x) for x in re.findall(r"exits \{\s*median_s: ([0-9.e-]+)", b)]
        lat[name] = [1e3 * (sum(stages[:i + 1]) + heads[i]) for i in range(len(heads))]
    rows = [l for l in open(f"{args.model_dir}/report.md") if re.match(r"\| (exit-\d+|final) ", l)]
    names = sorted(lat)
    print("\n| exit | stage output | head | val acc | test acc | MACs to here | " +
          " | ".join(f"{n} latency to exit (p50, ms) | of fp32 full" for n in names) + " |")
    print("|---|---|---|---|---|---|" + "---|---|" * len(names))
    for i, row in enumerate(rows):
        c = [x.strip() for x in row.strip().strip("|").split("|")]
        cells = " | ".join(f"{lat[n][i]:.3f} | {100 * lat[n][i] / lat['fp32'][-1]:.0f}%"
                           for n in names)
        print(f"| {c[0]} | {c[2]} | {c[3]} | {c[4]} | {c[5]} | {c[6]} | {cells} |")
    if os.path.exists(f"{run}/check-reference.json"):
        c = json.load(open(f"{run}/check-reference.json"))
        print(f"\nreference check    {c['images']} test images against {c['framework']} "
              f"({c['path']} path): max |logit diff| {c['max_abs_logit_diff']:.2e}, top-1 "
              f"agreement {c['top1_agree']}/{c['images']} "
              f"({100 * c['top1_agreement']:.2f}%): {'PASS' if c['passed'] else 'FAIL'}")
    print(f"\nlogs               {run}/")
    print(f"foreign job took   {args.seconds} s")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("folder")
    f.add_argument("--out", required=True)
    f.add_argument("--idx_dir", default=IDX_DIR)
    f.add_argument("--train", type=int, default=10000)
    f.add_argument("--val", type=int, default=2000)
    f.add_argument("--test", type=int, default=2000)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True, choices=["resnet18", "mobilenetv2", "vgg"])
    t.add_argument("--folder", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--limit", type=int, default=0, help="train images (0: all of train/)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max_seconds", type=float, default=0)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=1)
    e = sub.add_parser("reference")
    e.add_argument("--model", required=True, choices=["resnet18", "mobilenetv2", "vgg"])
    e.add_argument("--folder", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--threads", type=int, default=2)
    d = sub.add_parser("default-reference")
    d.add_argument("--onnx", default="var/ort/fmnist-resnet.onnx")
    d.add_argument("--images", default="var/foreign/fmnist-test1k")
    d.add_argument("--idx_dir", default=IDX_DIR)
    d.add_argument("--count", type=int, default=REFERENCE_IMAGES)
    d.add_argument("--classes", type=int, default=10)
    r = sub.add_parser("report")
    r.add_argument("--run", required=True)
    r.add_argument("--variant", required=True)
    r.add_argument("--seconds", type=int, default=0)
    r.add_argument("--model_dir", required=True)
    args = ap.parse_args()
    {"folder": write_folder, "train": train, "reference": reference,
     "default-reference": default_reference, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
