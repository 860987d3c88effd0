import torch, torch.nn as nn, numpy as np, sys
torch.manual_seed(0)
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
    def __init__(s, d=32, h=4, m=64, depth=2):
        super().__init__()
        s.patch=nn.Conv2d(1, d, 7, 7); s.cls=nn.Parameter(torch.randn(1,1,d)*0.02); s.pos=nn.Parameter(torch.randn(1,17,d)*0.02)
        s.blocks=nn.Sequential(*[Block(d,h,m) for _ in range(depth)]); s.norm=nn.LayerNorm(d); s.head=nn.Linear(d,10)
    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat((s.cls.expand(x.shape[0], -1, -1), x), dim=1) + s.pos
        x = s.norm(s.blocks(x))
        return s.head(x[:, 0])
m = ViT().eval()
x = torch.randn(2, 1, 28, 28)
torch.onnx.export(m, (x,), sys.argv[1], opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
np.save(sys.argv[1].replace(".onnx", ".input.npy"), x.numpy())
import onnxruntime as ort
s = ort.InferenceSession(sys.argv[1]); np.save(sys.argv[1].replace(".onnx", ".expected.npy"), s.run(None, {"x": x.numpy()})[0])
import onnx; g = onnx.load(sys.argv[1]).graph
from collections import Counter; print(Counter(n.op_type for n in g.node))
