#!/usr/bin/env python3
"""Writes the PyTorch-exported ViT fixtures of tests/onnx.rs (committed; rerun only to change them).

Needs torch, onnx, onnxruntime and numpy (`pip install torch onnx onnxruntime numpy`):
    python3 tests/onnx/make_torch_vit.py

A timm-style vision transformer (7x7 patches of 28x28 images, width 32, 2 blocks of 4 heads,
fused qkv unbound after a permute, nn.GELU, LayerNorm) exported by torch.onnx's TorchScript
exporter at opset 17 with a dynamic batch, as PyTorch users export: `vit_torch_gap` averages
the tokens before the head, `vit_torch_cls` prepends a class token (Expand of a parameter to
the batch, Concat) and reads it back (Gather). For each it writes `X.onnx`, `X.input.npy` (a
batch of 2) and `X.expected.npy`, ONNX Runtime's output on it.
"""
import os
import torch, torch.nn as nn, numpy as np, sys
class Attn(nn.Module):
    def __init__(s, d, h):
        super().__init__(); s.h=h; s.qkv=nn.Linear(d, 3*d); s.proj=nn.Linear(d, d); s.scale=(d//h)**-0.5
    def forward(s, x):
        B, N, C = x.shape
        qkv = s.qkv(x).reshape(B, N, 3, s.h, C // s.h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = (q @ k.transpose(-2, -1)) * s.scale
        a = a.softmax(dim=-1)
        return s.proj((a @ v).transpose(1, 2).reshape(B, N, C))
class Block(nn.Module):
    def __init__(s, d, h, m):
        super().__init__(); s.norm1=nn.LayerNorm(d); s.attn=Attn(d,h); s.norm2=nn.LayerNorm(d)
        s.fc1=nn.Linear(d,m); s.act=nn.GELU(); s.fc2=nn.Linear(m,d)
    def forward(s, x):
        x = x + s.attn(s.norm1(x))
        return x + s.fc2(s.act(s.fc1(s.norm2(x))))
class ViT(nn.Module):
    def __init__(s, d=32, h=4, m=64, depth=2, cls=True):
        super().__init__()
        s.use_cls = cls
        s.patch=nn.Conv2d(1, d, 7, 7); s.cls=nn.Parameter(torch.randn(1,1,d)*0.02); s.pos=nn.Parameter(torch.randn(1,17,d)*0.02)
        s.blocks=nn.Sequential(*[Block(d,h,m) for _ in range(depth)]); s.norm=nn.LayerNorm(d); s.head=nn.Linear(d,10)
    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)
        if s.use_cls:
            x = torch.cat((s.cls.expand(x.shape[0], -1, -1), x), dim=1) + s.pos
        else:
            x = x + s.pos[:, 1:]
        x = s.norm(s.blocks(x))
        return s.head(x[:, 0] if s.use_cls else x.mean(dim=1))


HERE = os.path.dirname(os.path.abspath(__file__))
import onnxruntime as ort
for name, cls in [("vit_torch_gap", False), ("vit_torch_cls", True)]:
    torch.manual_seed(0)
    m = ViT(cls=cls).eval()
    x = torch.randn(2, 1, 28, 28)
    path = os.path.join(HERE, f"{name}.onnx")
    torch.onnx.export(m, (x,), path, opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
    np.save(os.path.join(HERE, f"{name}.input.npy"), x.numpy())
    s = ort.InferenceSession(path)
    np.save(os.path.join(HERE, f"{name}.expected.npy"), s.run(None, {"x": x.numpy()})[0])
