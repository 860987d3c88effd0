#!/usr/bin/env python3
"""Per-node times of ONNX Runtime on one zoo model, to set beside `triton run --timing`.

Exports the model with `triton export` as benches/peers/ort_zoo.py does, runs it with ORT's profiler on one thread
and prints, per node (in graph order), the median time over the profiled calls.

    python3 benches/peers/ort_profile.py resnet18_cifar10 --batch 1 --kind fp32
    python3 benches/peers/ort_profile.py mobilenetv2_cifar10 --kind int8 --calls 200

Not part of CI (timings never are).
"""

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_zoo  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=ort_zoo.ZOO)
    ap.add_argument("--triton", default=os.path.join(ort_zoo.ROOT, "target", "release", "triton"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--kind", choices=["fp32", "int8"], default="fp32")
    ap.add_argument("--calls", type=int, default=100, help="profiled calls (after 10 untimed)")
    args = ap.parse_args()

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, f"{args.model}.onnx")
        in_name, in_shape = ort_zoo.export(args.triton, args.model, path)
        if args.kind == "int8":
            q = os.path.join(work, f"{args.model}.int8.onnx")
            ort_zoo.quantize(path, q, in_name, in_shape)
            path = q
        x = np.random.default_rng(2).standard_normal([args.batch] + in_shape).astype(np.float32)
        plain = ort_zoo.session(path)
        for _ in range(10):
            plain.run(None, {in_name: x})
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(work, "prof")
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(10 + args.calls):
            s.run(None, {in_name: x})
        trace = json.load(open(s.end_profiling()))

    times, order, ops = defaultdict(list), [], {}
    for ev in trace:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        if name not in ops:
            order.append(name)
            ops[name] = ev.get("args", {}).get("op_name", "?")
        times[name].append(ev["dur"] / 1e3)
    total = 0.0
    print(f"ONNX Runtime {ort.__version__} {args.kind}, {args.model}, batch {args.batch}, 1 thread: median ms per node")
    print("| node | op | median ms |")
    print("| --- | --- | ---: |")
    for name in order:
        t = times[name][10:] or times[name]
        med = float(np.median(t))
        total += med
        print(f"| {name} | {ops[name]} | {med:.4f} |")
    print(f"| total | | {total:.3f} |")


if __name__ == "__main__":
    main()
