#!/usr/bin/env python3
"""Writes the ONNX fixtures of tests/onnx.rs (committed; rerun only to change them).

Needs the `onnx` and `numpy` packages, and `onnxruntime` for the expected outputs:
    pip install onnx onnxruntime numpy
    python3 tests/onnx/make_fixtures.py

Every model is built with onnx's helper API (no PyTorch), laid out as PyTorch's exporter
writes it: NCHW, a dynamic batch dimension `N`, eval-mode batch norms folded into the
convolutions' biases where the exporter folds them, weights named `onnx::Conv_NNN` and nodes
named by module path (`/layer1/layer1.0/conv1/Conv`). For each model `X.onnx` it writes
`X.input.npy` (a batch of 2) and `X.expected.npy`, ONNX Runtime's output on it.

The hostile files (`bad_*.onnx`) are malformed on purpose; the importer must refuse each with
a clear error.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
rng = np.random.default_rng(1234)


class Builder:
    def __init__(self, name):
        self.name = name
        self.nodes, self.inits = [], []
        self.n = 0

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = scale or (2.0 / fan_in) ** 0.5
        self.n += 1
        return self.init(f"onnx::W_{self.n}", (rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op, inputs, name, outputs=1, **attrs):
        outs = [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def conv(self, x, cin, cout, k, path, stride=1, pad=0, group=1, bias=True, bn=False):
        w = self.weight([cout, cin // group, k, k])
        ins = [x, w]
        if bias:
            ins.append(self.init(f"onnx::B_{self.n}", (rng.standard_normal(cout) * 0.1).astype(np.float32)))
        y = self.node("Conv", ins, f"{path}/Conv", kernel_shape=[k, k], strides=[stride, stride],
                      pads=[pad] * 4, group=group, dilations=[1, 1])
        if bn:
            stats = [
                (1.0 + 0.1 * rng.standard_normal(cout)).astype(np.float32),
                (0.1 * rng.standard_normal(cout)).astype(np.float32),
                (0.1 * rng.standard_normal(cout)).astype(np.float32),
                (1.0 + 0.2 * rng.random(cout)).astype(np.float32),
            ]
            names = [self.init(f"{path.strip('/').replace('/', '.')}.bn.{p}", s)
                     for p, s in zip(["weight", "bias", "running_mean", "running_var"], stats)]
            y = self.node("BatchNormalization", [y] + names, f"{path}/BatchNormalization", epsilon=1e-5)
        return y

    def gemm(self, x, k, n, path):
        w = self.weight([n, k])
        b = self.init(f"onnx::Gemm_{self.n}", (rng.standard_normal(n) * 0.1).astype(np.float32))
        return self.node("Gemm", [x, w, b], f"{path}/Gemm", alpha=1.0, beta=1.0, transB=1)

    def save(self, x_shape, output, out_rank=2, inputs=None, expected=True):
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + list(x_shape))
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N"] + [f"d{i}" for i in range(1, out_rank)])
        graph = helper.make_graph(self.nodes, "main_graph", inputs or [x], [y], self.inits)
        model = helper.make_model(graph, producer_name="pytorch", opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = os.path.join(HERE, f"{self.name}.onnx")
        onnx.save(model, path)
        if expected:
            run_reference(path, [2] + list(x_shape))
        return path


def run_reference(path, shape):
    import onnxruntime as ort
    stem = path[: -len(".onnx")]
    x = rng.random(shape, dtype=np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": x})
    np.save(f"{stem}.input.npy", x)
    np.save(f"{stem}.expected.npy", y.astype(np.float32))


def lenet():
    """LeNet-5, flattened with `x.view(x.size(0), -1)` (a shape computation)."""
    b = Builder("lenet")
    h = b.node("Relu", [b.conv("input", 1, 6, 5, "/conv1", pad=2)], "/relu1/Relu")
    h = b.node("MaxPool", [h], "/pool1/MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Relu", [b.conv(h, 6, 16, 5, "/conv2")], "/relu2/Relu")
    h = b.node("MaxPool", [h], "/pool2/MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    # `x.view(x.size(0), -1)` as PyTorch exports it with a dynamic batch.
    shape = b.node("Shape", [h], "/Shape")
    n = b.node("Gather", [shape, b.init("zero", np.array(0, dtype=np.int64))], "/Gather", axis=0)
    n = b.node("Unsqueeze", [n, b.init("axes0", np.array([0], dtype=np.int64))], "/Unsqueeze")
    target = b.node("Concat", [n, b.init("minus_one", np.array([-1], dtype=np.int64))], "/Concat", axis=0)
    h = b.node("Reshape", [h, target], "/Reshape")
    h = b.node("Relu", [b.gemm(h, 400, 120, "/fc1")], "/relu3/Relu")
    h = b.node("Relu", [b.gemm(h, 120, 84, "/fc2")], "/relu4/Relu")
    b.save([1, 28, 28], b.gemm(h, 84, 10, "/fc3"))


def basic_block(b, x, cin, cout, stride, path, folded=True):
    """A ResNet BasicBlock; `folded`: batch norms folded into conv biases (PyTorch export)."""
    bn = not folded
    h = b.conv(x, cin, cout, 3, f"{path}/conv1", stride=stride, pad=1, bias=folded, bn=bn)
    h = b.node("Relu", [h], f"{path}/relu/Relu")
    h = b.conv(h, cout, cout, 3, f"{path}/conv2", pad=1, bias=folded, bn=bn)
    if stride != 1 or cin != cout:
        x = b.conv(x, cin, cout, 1, f"{path}/downsample/downsample.0", stride=stride, bias=folded, bn=bn)
    h = b.node("Add", [h, x], f"{path}/Add")
    return b.node("Relu", [h], f"{path}/relu_1/Relu")


def resnet_block():
    b = Builder("resnet_block")
    h = b.node("Relu", [b.conv("input", 3, 16, 3, "/conv1", pad=1, bias=False, bn=True)], "/relu/Relu")
    h = basic_block(b, h, 16, 16, 1, "/layer1/layer1.0", folded=False)
    h = basic_block(b, h, 16, 32, 2, "/layer2/layer2.0", folded=False)
    h = b.node("GlobalAveragePool", [h], "/avgpool/GlobalAveragePool")
    h = b.node("Flatten", [h], "/Flatten", axis=1)
    b.save([3, 16, 16], b.gemm(h, 32, 10, "/fc"))


def resnet18(width=8, size=32, classes=10, name="resnet18_w8", expected=True):
    """ResNet-18 as torchvision defines it (7x7 stem, max pool, 4 stages of 2 BasicBlocks),
    exported by PyTorch: batch norms folded into conv biases."""
    b = Builder(name)
    h = b.node("Relu", [b.conv("input", 3, width, 7, "/conv1", stride=2, pad=3)], "/relu/Relu")
    h = b.node("MaxPool", [h], "/maxpool/MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage, mult in enumerate([1, 2, 4, 8], start=1):
        cout = width * mult
        for i in range(2):
            stride = 2 if stage > 1 and i == 0 else 1
            h = basic_block(b, h, cin, cout, stride, f"/layer{stage}/layer{stage}.{i}")
            cin = cout
    h = b.node("GlobalAveragePool", [h], "/avgpool/GlobalAveragePool")
    h = b.node("Flatten", [h], "/Flatten", axis=1)
    return b.save([3, size, size], b.gemm(h, cin, classes, "/fc"), expected=expected)


def mobilenet_block():
    """An inverted residual (expand, depthwise, project) with a squeeze-excite, relu6 as
    Clip(0, 6), hard-swish and SiLU as x * sigmoid(x)."""
    b = Builder("mobilenet_block")
    zero, six = b.init("clip_min", np.float32(0.0)), b.init("clip_max", np.float32(6.0))
    h = b.conv("input", 3, 8, 3, "/features/0/0", stride=2, pad=1)
    h = b.node("HardSwish", [h], "/features/0/2/HardSwish")
    x = h
    h = b.node("Clip", [b.conv(h, 8, 32, 1, "/features/1/conv/0"), zero, six], "/features/1/conv/2/Clip")
    h = b.node("Clip", [b.conv(h, 32, 32, 3, "/features/1/conv/3", pad=1, group=32), zero, six], "/features/1/conv/5/Clip")
    # Squeeze-excite on the depthwise output.
    s = b.node("GlobalAveragePool", [h], "/features/1/se/GlobalAveragePool")
    s = b.node("Relu", [b.conv(s, 32, 8, 1, "/features/1/se/fc1")], "/features/1/se/Relu")
    s = b.node("Sigmoid", [b.conv(s, 8, 32, 1, "/features/1/se/fc2")], "/features/1/se/Sigmoid")
    h = b.node("Mul", [h, s], "/features/1/se/Mul")
    h = b.conv(h, 32, 8, 1, "/features/1/conv/6", bn=True, bias=False)
    h = b.node("Add", [x, h], "/features/1/Add")
    sig = b.node("Sigmoid", [h], "/features/2/Sigmoid")
    h = b.node("Mul", [h, sig], "/features/2/Mul")
    h = b.node("GlobalAveragePool", [h], "/avgpool/GlobalAveragePool")
    h = b.node("Flatten", [h], "/Flatten", axis=1)
    b.save([3, 16, 16], b.gemm(h, 8, 10, "/classifier"))


def ops():
    """Every other supported op: MatMul + Add as a linear layer, arithmetic with constants
    (scalar and per-channel), Tanh, HardSigmoid, AveragePool with padding, Concat, Reshape,
    Identity, Dropout, Constant, Softmax."""
    b = Builder("ops")
    h = b.conv("input", 2, 4, 3, "/conv", pad=1)
    a = b.node("AveragePool", [h], "/AveragePool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
               count_include_pad=1)
    t = b.node("Tanh", [h], "/Tanh")
    h = b.node("Concat", [a, t], "/Concat", axis=1)
    scale = b.init("channel_scale", (1.0 + 0.1 * rng.standard_normal((8, 1, 1))).astype(np.float32))
    h = b.node("Mul", [h, scale], "/Mul")
    half = b.node("Constant", [], "/Constant", value=numpy_helper.from_array(np.array(0.5, dtype=np.float32)))
    h = b.node("Sub", [h, half], "/Sub")
    two = b.init("two", np.float32(2.0))
    h = b.node("Div", [h, two], "/Div")
    h = b.node("HardSigmoid", [h], "/HardSigmoid", alpha=0.2, beta=0.5)
    h = b.node("Identity", [h], "/Identity")
    h = b.node("Dropout", [h], "/Dropout")
    shape = b.init("shape", np.array([0, -1], dtype=np.int64))
    h = b.node("Reshape", [h, shape], "/Reshape")
    w = b.init("fc.weight_t", (rng.standard_normal((8 * 6 * 6, 16)) * 0.05).astype(np.float32))
    h = b.node("MatMul", [h, w], "/fc/MatMul")
    bias = b.init("fc.bias", (rng.standard_normal(16) * 0.1).astype(np.float32))
    h = b.node("Add", [h, bias], "/fc/Add")
    h = b.node("Sigmoid", [h], "/Sigmoid")
    h = b.gemm(h, 16, 5, "/head")
    b.save([2, 6, 6], b.node("Softmax", [h], "/Softmax", axis=-1))


def external():
    """A linear layer whose weights live in an external data file beside the model."""
    b = Builder("external")
    h = b.node("Relu", [b.gemm("input", 6, 4, "/fc1")], "/Relu")
    b.save([6], b.gemm(h, 4, 3, "/fc2"), expected=False)
    path = os.path.join(HERE, "external.onnx")
    m = onnx.load(path)
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="external.weights", size_threshold=0)
    run_reference(path, [2, 6])


def unsupported():
    """Three nodes with no equivalent: a non-square kernel, an Erf and a Gather."""
    b = Builder("unsupported")
    w = b.init("w", np.ones((4, 2, 3, 1), dtype=np.float32))
    h = b.node("Conv", ["input", w], "/tall/Conv", kernel_shape=[3, 1])
    h = b.node("Erf", [h], "/Erf")
    idx = b.init("idx", np.array([0], dtype=np.int64))
    h = b.node("Gather", [h, idx], "/Gather", axis=1)
    b.save([2, 8, 8], h, out_rank=4, expected=False)


def hostile():
    """Malformed files: each must be refused with its own error."""
    good = open(os.path.join(HERE, "mobilenet_block.onnx"), "rb").read()
    write = lambda name, data: open(os.path.join(HERE, f"bad_{name}.onnx"), "wb").write(data)
    write("truncated", good[: len(good) // 2])
    write("garbage", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    # A raw_data field claiming 2 GB inside a tiny file (encoded by hand: no library writes it).
    def varint(v):
        out = b""
        while True:
            byte, v = v & 0x7F, v >> 7
            out += bytes([byte | (0x80 if v else 0)])
            if not v:
                return out
    field = lambda tag, payload: varint(tag) + varint(len(payload)) + payload
    tensor = b"\x08\x01" + b"\x10\x01" + field(0x42, b"w") + varint(0x4A) + varint(2**31)
    graph = field(0x2A, tensor)
    write("claims_2gb", b"\x08\x08" + field(0x42, b"\x10" + varint(OPSET)) + field(0x3A, graph))
    # Absurd dimensions: 10^12 x 10^12 floats.
    model_w = numpy_helper.from_array(np.zeros((1,), dtype=np.float32), "w")
    del model_w.dims[:]
    model_w.dims.extend([10**12, 10**12])
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])
    g = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"], name="mm")], "g", [x], [y], [model_w])
    write("dims", helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString())
    # A node reading a value nothing produces (a missing initializer).
    g = helper.make_graph([helper.make_node("MatMul", ["input", "missing_w"], ["y"], name="mm")], "g", [x], [y], [])
    write("missing_initializer", helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString())
    # A cycle: a reads b, b reads a.
    g = helper.make_graph([helper.make_node("Relu", ["b"], ["a"], name="first"),
                           helper.make_node("Relu", ["a"], ["b"], name="second")], "g", [x],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])], [])
    write("cycle", helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString())
    # External data in a file that is not there.
    ext = numpy_helper.from_array(np.zeros((4, 3), dtype=np.float32), "w")
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    for k, v in [("location", "weights.bin"), ("offset", "0"), ("length", "48")]:
        e = ext.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"], name="mm")], "g", [x], [y], [ext])
    write("external_missing", helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString())
    # An opset older than the importer reads.
    old = onnx.load(os.path.join(HERE, "unsupported.onnx"))
    old.opset_import[0].version = 9
    write("old_opset", old.SerializeToString())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "resnet18-full":
        # Not a fixture: the full-size ResNet-18 (ImageNet, 11.7M parameters) for timing.
        out = resnet18(width=64, size=224, classes=1000, name="resnet18_full", expected=False)
        print(out)
        sys.exit(0)
    lenet()
    resnet_block()
    resnet18()
    mobilenet_block()
    ops()
    external()
    unsupported()
    hostile()
    print("fixtures written to", HERE)
