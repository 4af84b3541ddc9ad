#!/usr/bin/python3
"""Writes the small generated seeds of fuzz_onnx_import (docs/fuzzing.md).

Usage: /usr/bin/python3 tests/fuzz/make_onnx_seeds.py [--out tests/fuzz/corpus/fuzz_onnx_import]
(Debian's python3-onnx; fixed seed, byte-identical output.)

The fixtures in tests/data/onnx are PyTorch exports of 68-213 KB, almost all of
it weights, which mutations gain little from. These are the same kinds of
network with 2-8 channels on an 8x8 input, a few hundred bytes to a few KB each:

  tiny_resnet        Conv+BN+Relu stem, a residual block (Add), a strided
                     Conv, GlobalAveragePool, Flatten, Gemm; dynamic batch,
                     opset 13, hapi.mean / hapi.std metadata
  tiny_mobilenet     Clip with min/max inputs, a depthwise Conv, an inverted
                     residual, MaxPool, AveragePool, Reshape to a Constant
                     shape, MatMul, Softmax last; batch 1, opset 13
  tiny_opmix_op10    opset 10: Clip with attributes, Sigmoid, HardSigmoid, Mul
                     by a tensor and by a constant, Concat, BatchNormalization
                     after the Concat, Identity, Dropout, a dilated SAME_UPPER
                     Conv, Gemm with a scalar bias
  tiny_resnet_truncated  the first half of tiny_resnet's bytes
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(18)


class Net:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def weight(self, name, shape):
        self.inits.append(
            numpy_helper.from_array(
                (RNG.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    def const(self, name, values, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.array(values, dtype=dtype), name))
        return name

    def node(self, op, inputs, **attrs):
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(
            helper.make_node(op, inputs, [out], name=f"{op.lower()}{self.count}", **attrs))
        return out

    def conv(self, x, cin, cout, k=3, group=1, bias=True, **attrs):
        n = self.count + 1
        inputs = [x, self.weight(f"w{n}", (cout, cin // group, k, k))]
        if bias:
            inputs.append(self.weight(f"b{n}", (cout,)))
        if "pads" not in attrs and "auto_pad" not in attrs:
            attrs["pads"] = [k // 2] * 4
        return self.node("Conv", inputs, kernel_shape=[k, k], group=group, **attrs)

    def bn(self, x, c):
        n = self.count + 1
        scale = self.weight(f"s{n}", (c,))
        b = self.weight(f"bb{n}", (c,))
        mean = self.weight(f"m{n}", (c,))
        var = self.const(f"v{n}", RNG.uniform(0.5, 1.5, c))
        return self.node("BatchNormalization", [x, scale, b, mean, var], epsilon=1e-5)

    def model(self, name, output, classes, opset, batch="N", metadata=None):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, classes])],
            self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="make_onnx_seeds")
        m.ir_version = 6 if opset <= 11 else 7
        for k, v in (metadata or {}).items():
            m.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(m)
        return m


def tiny_resnet():
    n = Net()
    x = n.node("Relu", [n.bn(n.conv("input", 3, 4, bias=False), 4)])
    y = n.node("Relu", [n.bn(n.conv(x, 4, 4, bias=False), 4)])
    y = n.bn(n.conv(y, 4, 4, bias=False), 4)
    x = n.node("Relu", [n.node("Add", [x, y])])
    x = n.node("Relu", [n.conv(x, 4, 8, strides=[2, 2])])
    x = n.node("Flatten", [n.node("GlobalAveragePool", [x])], axis=1)
    x = n.node("Gemm", [x, n.weight("fc", (3, 8)), n.weight("fcb", (3,))], transB=1)
    return n.model("tiny_resnet", x, 3, 13,
                   metadata={"hapi.mean": "0.5,0.5,0.5", "hapi.std": "0.25,0.25,0.25"})


def tiny_mobilenet():
    n = Net()
    lo, hi = n.const("lo", 0.0), n.const("hi", 6.0)
    x = n.node("Clip", [n.conv("input", 3, 4, strides=[2, 2]), lo, hi])
    y = n.node("Clip", [n.bn(n.conv(x, 4, 4, group=4, bias=False), 4), lo, hi])
    y = n.conv(y, 4, 4, k=1)
    x = n.node("Add", [x, y])
    x = n.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = n.node("Relu", [n.conv(x, 4, 2)])
    x = n.node("AveragePool", [x], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1],
               count_include_pad=0)
    shape = n.node("Constant", [], value=numpy_helper.from_array(
        np.array([-1, 18], dtype=np.int64), "shape"))
    n.nodes[-1].ClearField("input")
    x = n.node("Reshape", [x, shape])
    x = n.node("MatMul", [x, n.weight("fc", (18, 4))])
    x = n.node("Softmax", [x], axis=1)
    return n.model("tiny_mobilenet", x, 4, 13, batch=1)


def tiny_opmix_op10():
    n = Net()
    x = n.node("Clip", [n.conv("input", 3, 4)], min=0.0, max=6.0)
    a = n.node("Sigmoid", [n.conv(x, 4, 2, k=1)])
    b = n.node("HardSigmoid", [n.conv(x, 4, 2, k=3, auto_pad="SAME_UPPER", dilations=[2, 2])],
               alpha=0.2, beta=0.5)
    b = n.node("Mul", [b, n.node("Identity", [a])])
    b = n.node("Mul", [b, n.const("two", np.full((2, 1, 1), 2.0))])
    x = n.node("Concat", [a, b], axis=1)
    x = n.node("Dropout", [n.bn(x, 4)])
    x = n.node("Relu", [n.conv(x, 4, 4, strides=[2, 2])])
    x = n.node("Flatten", [n.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])])
    x = n.node("Gemm", [x, n.weight("fc", (16, 3)), n.const("fcb", [0.1])], alpha=0.5)
    return n.model("tiny_opmix_op10", x, 3, 10)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fuzz/corpus/fuzz_onnx_import")
    out = parser.parse_args().out
    os.makedirs(out, exist_ok=True)
    resnet = tiny_resnet().SerializeToString()
    seeds = {
        "tiny_resnet": resnet,
        "tiny_mobilenet": tiny_mobilenet().SerializeToString(),
        "tiny_opmix_op10": tiny_opmix_op10().SerializeToString(),
        "tiny_resnet_truncated": resnet[:len(resnet) // 2],
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name + ".onnx"), "wb") as f:
            f.write(data)
        print(f"{name}.onnx: {len(data)} bytes")


if __name__ == "__main__":
    main()
