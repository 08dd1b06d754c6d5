#!/usr/bin/env python3
"""What fp8 would buy the training step's products, measured with PyTorch's own cuBLASLt calls on
the GPU machine (no build needed): for each product of a RAR block at batch 64 (M = 64 * 258 rows),
the forward (x·Wᵀ), the input gradient (g·W) and the weight gradient (gᵀ·x, float32 out) in bf16
and through torch._scaled_mm in fp8 (e4m3 inputs and weights, e5m2 gradients; fast accumulation on
and off), plus what the operand casts and transposes cost as plain passes. Prints markdown rows and
the per-step sums (x blocks). Usage: python3 bench/fp8_products.py [rar_b rar_xl]"""
import sys
import torch

PRESETS = {"rar_b": (768, 3072, 24), "rar_l": (1024, 4096, 24), "rar_xl": (1280, 5120, 32)}
M = 64 * 258
E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2


def timed(f, iters=20):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        f()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters


def mm_f32(a, b):
    try:
        return torch.mm(a, b, out_dtype=torch.float32)
    except TypeError:
        return torch.mm(a, b)


def main():
    torch.manual_seed(0)
    one = torch.ones((), device="cuda")
    names = sys.argv[1:] or ["rar_b", "rar_xl"]
    for name in names:
        H, I, L = PRESETS[name]
        prods = [("qkv", H, 3 * H), ("proj", H, H), ("fc1", H, I), ("fc2", I, H),
                 ("adaLN shift", H, 2 * H), ("adaLN rest", H, 4 * H)]
        print(f"\n{name}: M={M}, per call ms (TFLOP/s)\n")
        print("| product | bf16 fwd | bf16 dx | bf16 dw | fp8 fwd fast | fp8 fwd | fp8 dx | fp8 dw | casts+transposes |")
        print("|---|---|---|---|---|---|---|---|---|")
        tot = {}
        for pname, K, N in prods:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
            g = torch.randn(M, N, device="cuda", dtype=torch.bfloat16) * 1e-3
            fl = 2.0 * M * K * N
            r = {}
            r["bf16 fwd"] = timed(lambda: x @ w.t())
            r["bf16 dx"] = timed(lambda: g @ w)
            r["bf16 dw"] = timed(lambda: mm_f32(g.t(), x))
            xq, wq = x.to(E4), w.to(E4)
            wqt = w.t().contiguous().to(E4)
            gqt, xqt = g.t().contiguous().to(E5), x.t().contiguous().to(E4)
            gq = g.to(E5)
            sm = torch._scaled_mm
            r["fp8 fwd fast"] = timed(lambda: sm(xq, wq.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=True))
            r["fp8 fwd"] = timed(lambda: sm(xq, wq.t(), one, one, out_dtype=torch.bfloat16))
            r["fp8 dx"] = timed(lambda: sm(gq, wqt.t(), one, one, out_dtype=torch.bfloat16))
            r["fp8 dw"] = timed(lambda: sm(gqt, xqt.t(), one, one, out_dtype=torch.float32))
            # as plain passes: x to e4m3, x transposed to e4m3, g to e5m2, g transposed to e5m2
            r["casts"] = (timed(lambda: x.to(E4)) + timed(lambda: x.t().contiguous().to(E4))
                          + timed(lambda: g.to(E5)) + timed(lambda: g.t().to(E5).contiguous()))
            cells = []
            for k in ["bf16 fwd", "bf16 dx", "bf16 dw", "fp8 fwd fast", "fp8 fwd", "fp8 dx", "fp8 dw"]:
                cells.append(f"{r[k]:.3f} ({fl / r[k] / 1e9:.0f})")
                tot[k] = tot.get(k, 0.0) + r[k]
            cells.append(f"{r['casts']:.3f}")
            tot["casts"] = tot.get("casts", 0.0) + r["casts"]
            print(f"| {pname} | " + " | ".join(cells) + " |")
        print(f"\nper step ({L} blocks), ms: " + ", ".join(f"{k} {v * L:.1f}" for k, v in tot.items()))
        bf = (tot["bf16 fwd"] + tot["bf16 dx"] + tot["bf16 dw"]) * L
        f8 = (tot["fp8 fwd fast"] + tot["fp8 dx"] + tot["fp8 dw"]) * L
        print(f"all six products bf16 {bf:.1f} ms, fp8 {f8:.1f} ms (+ casts as passes {tot['casts'] * L:.1f})")


if __name__ == "__main__":
    main()
