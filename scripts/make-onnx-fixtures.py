#!/usr/bin/python3
"""Builds the ONNX import test fixtures in tests/data/onnx/.

Usage: /usr/bin/python3 scripts/make-onnx-fixtures.py [--out tests/data/onnx]
(Debian's python3-torch, python3-torchvision and python3-onnx; fixed seeds, no
network access, no pretrained weights.)

Correctness fixtures, each 3x32x32 RGB with random weights and batch-norm
statistics gathered from random data (so that activations stay in range):

  resnet_tiny.onnx    ResNet-style: stem + 8 basic blocks (BN, 1x1 shortcuts),
                      dynamic batch dimension, opset 13
  mobilenet_tiny.onnx MobileNetV2-style: depthwise convs, ReLU6 (Clip with
                      inputs), inverted residuals, opset 13
  vgg_tiny.onnx       VGG-style: 8 conv-BN-ReLU stages, max pools, two linear
                      layers, Softmax as the last op, opset 13; an Identity
                      and a Dropout node inserted (PyTorch exports neither)
  opmix_op10.onnx     the other ops (dilated/depthwise Conv, Sigmoid,
  opmix_op14.onnx     HardSigmoid, HardSwish, Mul, Concat, AveragePool,
                      BatchNormalization after a Concat, MatMul, Reshape with a
                      constant shape): the same network at opset 10 (Clip with
                      attributes, HardSwish decomposed) and opset 14

Each has <name>.input.bin (float32 little-endian, N x 3 x 32 x 32, pixels in
[0,1] before normalisation) and <name>.output.bin (float32, N x classes: what
PyTorch computes from (input - mean) / std). Mean and std are stored in the
file's metadata_props (hapi.mean, hapi.std), as hapi-import reads them.

Error fixtures:
  unsupported_op.onnx   a LeakyRelu node named "leaky"
  dynamic_spatial.onnx  input N x 3 x H x W with symbolic H and W
  truncated.onnx        the first half of resnet_tiny.onnx
  one_cut.onnx          conv -> relu -> global pool -> linear: one cut point
"""

import argparse
import os

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

NUM_CLASSES = 10
SAMPLES = 4
MEAN = [0.49, 0.48, 0.45]
STD = [0.25, 0.24, 0.26]


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    layers = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.conv2 = conv_bn(cout, cout, act=None)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, k=1, stride=stride, act=None)

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.conv2(self.conv1(x)) + identity)


class ResNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        blocks, cin = [], 8
        for width, stride in [(8, 1), (8, 1), (12, 2), (12, 1), (16, 2), (16, 1), (24, 2),
                              (24, 1)]:
            blocks.append(BasicBlock(cin, width, stride))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, NUM_CLASSES)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, k=1, act=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, stride=stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, k=1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetTiny(nn.Module):
    # (expansion, channels, repeats, stride), as torchvision's MobileNetV2.
    SETTING = [(1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 3, 2), (4, 24, 2, 1), (4, 32, 2, 2)]

    def __init__(self):
        super().__init__()
        layers, cin = [conv_bn(3, 8, act=nn.ReLU6)], 8
        for t, c, n, s in self.SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 64, k=1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class VggTiny(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for width in [8, 8, 'M', 16, 16, 'M', 24, 24, 'M', 32, 32, 'M']:
            if width == 'M':
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn(cin, width))
                cin = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 2 * 2, 32), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(32, NUM_CLASSES))

    def forward(self, x):
        x = self.classifier(torch.flatten(self.features(x), 1))
        return torch.softmax(x, 1)


class OpMix(nn.Module):
    """Every supported op the three architectures above do not use."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, act=nn.Hardswish)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.se_reduce = nn.Conv2d(16, 4, 1)
        self.se_expand = nn.Conv2d(4, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.down = conv_bn(16, 16, stride=2, act=nn.ReLU6)
        self.head = conv_bn(16, 16, stride=2, act=nn.Hardsigmoid)
        self.weight = nn.Parameter(torch.randn(16 * 8 * 8, NUM_CLASSES) * 0.05)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([torch.sigmoid(self.dilated(x)), self.depthwise(x)], 1)
        x = self.bn(x)
        se = nn.functional.adaptive_avg_pool2d(x, 1)
        x = x * torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(se))))
        x = self.avg(x)
        x = self.head(self.down(x))
        return torch.matmul(x.reshape(-1, 16 * 8 * 8), self.weight)


def calibrate_batch_norm(model, seed):
    """Random weights, BN statistics from random data, random BN affine."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(normalise(torch.rand(16, 3, 32, 32)))
    model.eval()


def normalise(x):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def set_metadata(model_proto):
    for key, value in [('hapi.mean', ','.join(str(m) for m in MEAN)),
                       ('hapi.std', ','.join(str(s) for s in STD)),
                       ('hapi.resize', 'resize')]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def insert_passthrough(proto, tensor, op_type, node_name):
    """Puts an Identity or Dropout node after `tensor` (for coverage; the
    exporter removes both from inference graphs)."""
    output = tensor + '_' + op_type
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name == tensor:
                node.input[i] = output
    proto.graph.node.append(helper.make_node(op_type, [tensor], [output], name=node_name))
    nodes = list(proto.graph.node)  # keep the topological order
    producer = next(i for i, n in enumerate(nodes) if tensor in n.output)
    nodes.insert(producer + 1, nodes.pop())
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def export(make_model, name, out, opset, dynamic_batch=False, seed=1, passthrough=()):
    torch.manual_seed(seed)
    model = make_model()
    calibrate_batch_norm(model, seed)
    pixels = torch.rand(SAMPLES, 3, 32, 32)
    with torch.no_grad():
        reference = model(normalise(pixels))
    path = os.path.join(out, name + '.onnx')
    axes = {'input': {0: 'batch'}, 'output': {0: 'batch'}} if dynamic_batch else None
    # PRESERVE keeps BatchNormalization nodes (EVAL would fold them into the
    # convolutions at export): the importer's folding is under test.
    torch.onnx.export(model, normalise(pixels[:1]) if not dynamic_batch else normalise(pixels),
                      path, opset_version=opset, input_names=['input'],
                      output_names=['output'], dynamic_axes=axes,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
    proto = onnx.load(path)
    set_metadata(proto)
    for tensor, op_type, node_name in passthrough:
        insert_passthrough(proto, tensor, op_type, node_name)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    pixels.numpy().astype('<f4').tofile(os.path.join(out, name + '.input.bin'))
    reference.numpy().astype('<f4').tofile(os.path.join(out, name + '.output.bin'))
    print(f'{path}: {os.path.getsize(path)} bytes, '
          f'{len(proto.graph.node)} nodes, output {tuple(reference.shape)}')


def small_graph(name, nodes, input_dims, extra_initializers=()):
    """Conv(3->4) -> nodes -> GlobalAveragePool -> Flatten -> Gemm(4->10)."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype('f4'), 'conv.w'),
        numpy_helper.from_array(rng.standard_normal((10, 4)).astype('f4'), 'fc.w'),
        numpy_helper.from_array(np.zeros(10, 'f4'), 'fc.b'),
    ] + list(extra_initializers)
    graph = helper.make_graph(
        [helper.make_node('Conv', ['input', 'conv.w'], ['c'], name='conv', pads=[1, 1, 1, 1])]
        + nodes + [
            helper.make_node('GlobalAveragePool', ['a'], ['p'], name='pool'),
            helper.make_node('Flatten', ['p'], ['f'], name='flatten'),
            helper.make_node('Gemm', ['f', 'fc.w', 'fc.b'], ['output'], name='fc', transB=1),
        ], name,
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info('output', TensorProto.FLOAT, [input_dims[0], 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    onnx.checker.check_model(model)
    return model


def error_fixtures(out):
    onnx.save(small_graph('unsupported', [
        helper.make_node('LeakyRelu', ['c'], ['a'], name='leaky', alpha=0.1)], [1, 3, 32, 32]),
        os.path.join(out, 'unsupported_op.onnx'))
    onnx.save(small_graph('dynamic', [
        helper.make_node('Relu', ['c'], ['a'], name='relu')], ['N', 3, 'H', 'W']),
        os.path.join(out, 'dynamic_spatial.onnx'))
    onnx.save(small_graph('one_cut', [
        helper.make_node('Relu', ['c'], ['a'], name='relu')], [1, 3, 32, 32]),
        os.path.join(out, 'one_cut.onnx'))
    with open(os.path.join(out, 'resnet_tiny.onnx'), 'rb') as f:
        data = f.read()
    with open(os.path.join(out, 'truncated.onnx'), 'wb') as f:
        f.write(data[:len(data) // 2])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'onnx'))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    export(ResNetTiny, 'resnet_tiny', args.out, 13, dynamic_batch=True, seed=1)
    export(MobileNetTiny, 'mobilenet_tiny', args.out, 13, seed=2)
    export(VggTiny, 'vgg_tiny', args.out, 13, seed=3, passthrough=[
        ('/features/features.2/MaxPool_output_0', 'Identity', 'identity'),
        ('/Flatten_output_0', 'Dropout', 'dropout')])
    export(OpMix, 'opmix_op10', args.out, 10, seed=4)
    export(OpMix, 'opmix_op14', args.out, 14, seed=4)
    error_fixtures(args.out)


if __name__ == '__main__':
    main()
