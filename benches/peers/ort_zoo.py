#!/usr/bin/env python3
"""Side-by-side latency of the zoo: ONNX Runtime (FP32 and int8 static QDQ) against Triton.

Builds each zoo model's architecture as ONNX (random weights; batch norms folded into the
convolutions, as PyTorch's exporter and ORT's optimizer leave them), times ONNX Runtime on one
thread at the batch sizes asked, runs `triton bench MODEL --threads 1 --no-scaling --json` in
the same run, and prints one ratio table. Needs: pip install numpy onnx onnxruntime.

    python3 benches/peers/ort_zoo.py                        # every zoo model, batches 1 and 16
    python3 benches/peers/ort_zoo.py resnet18_cifar10 --batch-sizes 1
    python3 benches/peers/ort_zoo.py --triton target/release/triton --json peers.json

int8 is ORT's fast path: QDQ with u8 activations and s8 per-channel weights, calibrated on
random inputs (the timing does not depend on the values). Timings are medians; not part of CI.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Net:
    """A tiny ONNX graph builder: NCHW, random weights, a dynamic batch dimension."""

    def __init__(self, name, in_shape, seed=0):
        self.name = name
        self.nodes, self.inits = [], []
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B"] + list(in_shape))
        self.in_shape = in_shape

    def fresh(self, what):
        self.count += 1
        return f"{what}{self.count}"

    def const(self, arr, what="w"):
        name = self.fresh(what)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def op(self, op_type, inputs, **attrs):
        out = self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, pad=0, groups=1):
        fan_in = cin // groups * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(cout) * 0.01
        return self.op("Conv", [x, self.const(w), self.const(b, "b")], kernel_shape=[k, k],
                       strides=[stride, stride], pads=[pad] * 4, group=groups)

    def linear(self, x, cin, cout):
        w = self.rng.standard_normal((cout, cin)) * np.sqrt(2.0 / cin)
        return self.op("Gemm", [x, self.const(w), self.const(np.zeros(cout), "b")], transB=1)

    def relu(self, x):
        return self.op("Relu", [x])

    def relu6(self, x):
        return self.op("Clip", [x, self.const(np.array(0.0), "lo"), self.const(np.array(6.0), "hi")])

    def silu(self, x):
        return self.op("Mul", [x, self.op("Sigmoid", [x])])

    def finish(self, y, classes):
        out = helper.make_tensor_value_info(y, TensorProto.FLOAT, ["B", classes])
        g = helper.make_graph(self.nodes, self.name, [self.input], [out], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def mnist_mlp():
    n = Net("MnistMlp", [784])
    h = n.relu(n.linear("x", 784, 256))
    h = n.relu(n.linear(h, 256, 128))
    return n.finish(n.linear(h, 128, 10), 10)


def mnist_cnn():
    n = Net("MnistCnn", [1, 28, 28])
    h = n.op("MaxPool", [n.relu(n.conv("x", 1, 6, 5, pad=2))], kernel_shape=[2, 2], strides=[2, 2])
    h = n.op("MaxPool", [n.relu(n.conv(h, 6, 16, 5))], kernel_shape=[2, 2], strides=[2, 2])
    h = n.op("Flatten", [h], axis=1)
    h = n.relu(n.linear(h, 400, 120))
    h = n.relu(n.linear(h, 120, 84))
    return n.finish(n.linear(h, 84, 10), 10)


def basic_block(n, x, cin, cout, stride):
    h = n.relu(n.conv(x, cin, cout, 3, stride, 1))
    h = n.conv(h, cout, cout, 3, 1, 1)
    s = n.conv(x, cin, cout, 1, stride) if stride != 1 or cin != cout else x
    return n.relu(n.op("Add", [h, s]))


def bottleneck(n, x, cin, planes, stride):
    out = planes * 4
    h = n.relu(n.conv(x, cin, planes, 1))
    h = n.relu(n.conv(h, planes, planes, 3, stride, 1))
    h = n.conv(h, planes, out, 1)
    s = n.conv(x, cin, out, 1, stride) if stride != 1 or cin != out else x
    return n.relu(n.op("Add", [h, s]))


def resnet(name, blocks, bottle):
    n = Net(name, [3, 32, 32])
    h = n.relu(n.conv("x", 3, 64, 3, 1, 1))
    cin = 64
    for stage, (planes, reps) in enumerate(zip([64, 128, 256, 512], blocks)):
        for r in range(reps):
            stride = 2 if stage > 0 and r == 0 else 1
            if bottle:
                h = bottleneck(n, h, cin, planes, stride)
                cin = planes * 4
            else:
                h = basic_block(n, h, cin, planes, stride)
                cin = planes
    h = n.op("Flatten", [n.op("GlobalAveragePool", [h])], axis=1)
    return n.finish(n.linear(h, cin, 10), 10)


def inverted_residual(n, x, cin, cout, stride, expand, act, k=3, se=False):
    hidden = cin * expand
    h = act(n.conv(x, cin, hidden, 1)) if expand != 1 else x
    h = act(n.conv(h, hidden, hidden, k, stride, (k - 1) // 2, groups=hidden))
    if se:
        squeeze = max(1, cin // 4)
        s = n.op("GlobalAveragePool", [h])
        s = n.op("Sigmoid", [n.conv(n.silu(n.conv(s, hidden, squeeze, 1)), squeeze, hidden, 1)])
        h = n.op("Mul", [h, s])
    h = n.conv(h, hidden, cout, 1)
    return n.op("Add", [h, x]) if stride == 1 and cin == cout else h


def mobilenetv2():
    n = Net("MobileNetV2", [3, 32, 32])
    h = n.relu6(n.conv("x", 3, 32, 3, 1, 1))
    cfg = [(32, 16, 1, 1), (16, 24, 1, 6), (24, 24, 1, 6), (24, 32, 2, 6), (32, 32, 1, 6), (32, 32, 1, 6),
           (32, 64, 2, 6), (64, 64, 1, 6), (64, 64, 1, 6), (64, 64, 1, 6), (64, 96, 1, 6), (96, 96, 1, 6),
           (96, 96, 1, 6), (96, 160, 2, 6), (160, 160, 1, 6), (160, 160, 1, 6), (160, 320, 1, 6)]
    for cin, cout, s, t in cfg:
        h = inverted_residual(n, h, cin, cout, s, t, n.relu6)
    h = n.relu6(n.conv(h, 320, 1280, 1))
    h = n.op("Flatten", [n.op("GlobalAveragePool", [h])], axis=1)
    return n.finish(n.linear(h, 1280, 10), 10)


def efficientnet_b0():
    n = Net("EfficientNetB0", [3, 224, 224])
    h = n.silu(n.conv("x", 3, 32, 3, 2, 1))
    cfg = [(32, 16, 1, 3, 1), (16, 24, 6, 3, 2), (24, 24, 6, 3, 1), (24, 40, 6, 5, 2), (40, 40, 6, 5, 1),
           (40, 80, 6, 3, 2), (80, 80, 6, 3, 1), (80, 80, 6, 3, 1), (80, 112, 6, 5, 1), (112, 112, 6, 5, 1),
           (112, 112, 6, 5, 1), (112, 192, 6, 5, 2), (192, 192, 6, 5, 1), (192, 192, 6, 5, 1),
           (192, 192, 6, 5, 1), (192, 320, 6, 3, 1)]
    for cin, cout, t, k, s in cfg:
        h = inverted_residual(n, h, cin, cout, s, t, n.silu, k=k, se=True)
    h = n.silu(n.conv(h, 320, 1280, 1))
    h = n.op("Flatten", [n.op("GlobalAveragePool", [h])], axis=1)
    return n.finish(n.linear(h, 1280, 1000), 1000)


def vgg16():
    n = Net("Vgg16", [3, 32, 32])
    h, cin = "x", 3
    for cout, convs in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        for _ in range(convs):
            h, cin = n.relu(n.conv(h, cin, cout, 3, 1, 1)), cout
        h = n.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = n.op("Flatten", [h], axis=1)
    return n.finish(n.linear(h, 512, 10), 10)


ZOO = {
    "mnist_mlp": mnist_mlp,
    "mnist_cnn": mnist_cnn,
    "resnet18_cifar10": lambda: resnet("ResNet18", [2, 2, 2, 2], False),
    "resnet34_cifar10": lambda: resnet("ResNet34", [3, 4, 6, 3], False),
    "resnet50_cifar10": lambda: resnet("ResNet50", [3, 4, 6, 3], True),
    "mobilenetv2_cifar10": mobilenetv2,
    "vgg16_cifar10": vgg16,
    "efficientnet_b0_imagenet": efficientnet_b0,
}


def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def quantize(fp32_path, int8_path, in_shape):
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.data = iter([{"x": rng.standard_normal([1] + in_shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    pre = fp32_path + ".pre.onnx"
    try:
        q.quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation of the calibration only
        pre = fp32_path
    q.quantize_static(pre, int8_path, Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)


def median_ms(run, budget_s):
    run()  # warm-up
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min(0.05, budget_s / 4):
        run()
    samples = []
    t0 = time.perf_counter()
    while len(samples) < 3 or (time.perf_counter() - t0 < budget_s and len(samples) < 1000):
        t = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t) * 1e3)
    return float(np.median(samples))


def time_ort(name, batches, budget_s, workdir):
    m = ZOO[name]()
    in_shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
    fp32 = os.path.join(workdir, f"{name}.onnx")
    int8 = os.path.join(workdir, f"{name}.int8.onnx")
    onnx.save(m, fp32)
    quantize(fp32, int8, in_shape)
    out = {}
    for kind, path in [("fp32", fp32), ("int8", int8)]:
        s = session(path)
        for b in batches:
            x = np.random.default_rng(2).standard_normal([b] + in_shape).astype(np.float32)
            out[(kind, b)] = median_ms(lambda: s.run(None, {"x": x}), budget_s)
    return out


def time_triton(triton, name, batches, budget_s, workdir):
    path = os.path.join(workdir, f"{name}.triton.json")
    cmd = [triton, "bench", os.path.join(ROOT, "examples", f"{name}.tri"), "--threads", "1", "--no-scaling",
           "--batch-sizes", ",".join(map(str, batches)), "--max-seconds", str(budget_s), "--json", path]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        report = json.load(f)
    out = {}
    for case in report["latency"]:
        if case["threads"] == 1:
            out[(case["side"], case["batch"])] = case["stats"]["median_ms"]
    return out, report["machine"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="zoo models (default: all)")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--max-seconds", type=float, default=2.0, help="time budget per case")
    ap.add_argument("--triton", default=os.path.join(ROOT, "target", "release", "triton"))
    ap.add_argument("--no-triton", action="store_true", help="time ONNX Runtime only")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    models = args.models or list(ZOO)
    for m in models:
        if m not in ZOO:
            sys.exit(f"unknown model `{m}`; the zoo: {', '.join(ZOO)}")
    import onnxruntime
    rows, machine = [], None
    with tempfile.TemporaryDirectory() as work:
        for name in models:
            # ImageNet-sized EfficientNet-B0: batch 1 only, as in benches/inference.rs.
            bs = [1] if "imagenet" in name else batches
            ort_t = time_ort(name, bs, args.max_seconds, work)
            tri_t = {}
            if not args.no_triton:
                tri_t, machine = time_triton(args.triton, name, bs, args.max_seconds, work)
            for b in bs:
                r = {"model": name, "batch": b, "ort_fp32": ort_t[("fp32", b)], "ort_int8": ort_t[("int8", b)],
                     "triton_fp32": tri_t.get(("fp32", b)), "triton_ternary": tri_t.get(("ternary", b))}
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}")
    ratio = lambda a, b: "-" if a is None or b is None else f"{b / a:.2f}x"
    print(f"ONNX Runtime {onnxruntime.__version__}, 1 thread, medians in ms"
          + (f"; {machine.get('cpu', '')}" if machine else ""))
    print("| model | batch | Triton ternary | Triton FP32 | ORT FP32 | ORT int8 |"
          " ternary vs best ORT | Triton FP32 vs ORT FP32 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        best = min(r["ort_fp32"], r["ort_int8"])
        fp = "-" if r["triton_fp32"] is None else f"{r['triton_fp32'] / r['ort_fp32']:.2f}x slower" \
            if r["triton_fp32"] > r["ort_fp32"] else f"{r['ort_fp32'] / r['triton_fp32']:.2f}x faster"
        print(f"| {r['model']} | {r['batch']} | {fmt(r['triton_ternary'])} | {fmt(r['triton_fp32'])} | "
              f"{fmt(r['ort_fp32'])} | {fmt(r['ort_int8'])} | {ratio(r['triton_ternary'], best)} | {fp} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": onnxruntime.__version__, "machine": machine, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
