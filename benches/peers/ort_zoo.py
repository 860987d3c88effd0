#!/usr/bin/env python3
"""Side-by-side latency of the zoo: ONNX Runtime (FP32 and int8 static QDQ) against Triton.

Exports each zoo model with `triton export` (the weights `triton bench` runs: the shipped ones
or the seed-0 initialisation; ORT's optimizer folds the batch norms), times ONNX Runtime on one
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


ZOO = sorted(f[: -len(".tri")] for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".tri"))


def export(triton, name, path):
    """The zoo model as ONNX, written by `triton export` with the weights `triton bench` uses
    (the shipped `<stem>.safetensors` when there is one, else the seed-0 initialisation), so
    ONNX Runtime and Triton run the same network with the same weights. Returns the input's name
    and shape (without the batch)."""
    subprocess.run([triton, "export", os.path.join(ROOT, "examples", f"{name}.tri"), "--precision", "fp32",
                    "--onnx", path, "--quiet"], check=True)
    m = onnx.load(path)
    inp = m.graph.input[0]
    return inp.name, [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]


def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def quantize(fp32_path, int8_path, in_name, in_shape):
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.data = iter([{in_name: rng.standard_normal([1] + in_shape).astype(np.float32)} for _ in range(4)])

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


def time_ort(triton, name, batches, budget_s, workdir):
    fp32 = os.path.join(workdir, f"{name}.onnx")
    int8 = os.path.join(workdir, f"{name}.int8.onnx")
    in_name, in_shape = export(triton, name, fp32)
    quantize(fp32, int8, in_name, in_shape)
    out = {}
    for kind, path in [("fp32", fp32), ("int8", int8)]:
        s = session(path)
        for b in batches:
            x = np.random.default_rng(2).standard_normal([b] + in_shape).astype(np.float32)
            out[(kind, b)] = median_ms(lambda: s.run(None, {in_name: x}), budget_s)
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
    ap.add_argument("--no-triton", action="store_true", help="time ONNX Runtime only (triton still exports the models)")
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
            ort_t = time_ort(args.triton, name, bs, args.max_seconds, work)
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
