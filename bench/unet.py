"""The paper's U-Net (sip_train.networks.unet) against the same U-Net written as plain torch functions, and
against itself with out-of-place ReLUs: forward + backward time on one batch, interleaved, same weights.

    python bench/unet.py --batch 32 --rounds 8 --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, provenance, write_section  # noqa: E402

from sip_train.networks.unet import UNet  # noqa: E402


def plain_unet(net: UNet):
    """The same network as a function of its weights: conv, batch norm (training statistics), ReLU in place."""
    def block(h: torch.Tensor, layers) -> torch.Tensor:
        for conv, norm in zip(layers[0::3], layers[1::3]):
            h = F.conv2d(h, conv.weight, conv.bias, padding=1)
            h = F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, training=True,
                             momentum=norm.momentum, eps=norm.eps)
            h = F.relu_(h)
        return h

    def forward(y: torch.Tensor) -> torch.Tensor:
        skips = [block(y, net.inc)]
        for layers in net.down:
            skips.append(block(F.max_pool2d(skips[-1], 2), layers))
        h = skips.pop()
        for layers in reversed(net.up):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([skip, h], 1), layers)
        return F.conv2d(h, net.outc.weight, net.outc.bias)

    return forward


def forward_backward(forward, parameters: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    for p in parameters:
        p.grad = None
    out = forward(y)
    (0.5 * out.pow(2).sum()).backward()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (1, args.resolution, args.resolution)
    nets = {name: UNet(shape, shape) for name in ("sip-train U-Net", "out-of-place ReLU", "plain torch functions")}
    reference = nets["sip-train U-Net"].state_dict()
    for net in nets.values():
        net.load_state_dict(reference)
    for module in nets["out-of-place ReLU"].modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    forwards = {name: net for name, net in nets.items()}
    forwards["plain torch functions"] = plain_unet(nets["plain torch functions"])
    y = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(1))
    outputs = {name: forward_backward(forwards[name], list(nets[name].parameters()), y) for name in nets}
    same = {name: torch.equal(outputs[name], outputs["sip-train U-Net"]) and all(
        torch.equal(a.grad, b.grad) for a, b in zip(nets[name].parameters(), nets["sip-train U-Net"].parameters()))
        for name in nets}
    times: dict[str, list[float]] = {name: [] for name in nets}
    names = list(nets)
    for round_index in range(args.rounds):
        for name in names[round_index % 3:] + names[:round_index % 3]:
            start = time.process_time()
            forward_backward(forwards[name], list(nets[name].parameters()), y)
            times[name].append(1e3 * (time.process_time() - start))
    base = times["sip-train U-Net"]
    rows = [[name, f"{statistics.median(times[name]):.1f}",
             f"{statistics.median([a / b for a, b in zip(times[name], base)]):.3f}", "✓" if same[name] else "✗"]
            for name in names]
    text = "\n".join([
        "## The U-Net against plain torch",
        "",
        f"CPU, process CPU time of forward + backward (loss 1/2 |NN(y)|²) on one batch of {args.batch} at "
        f"{args.resolution}x{args.resolution}, {args.rounds} rounds in rotating order, same weights. 'Same result': "
        "output and every gradient bitwise equal to the sip-train U-Net's.",
        "",
        markdown_table(["network", "forward + backward ms (median)", "/ sip-train U-Net, per round", "same result"],
                       rows),
        "",
        *provenance("bench/unet.py"),
    ])
    print(text)
    if args.write is not None:
        write_section(args.write, "unet", text)


if __name__ == "__main__":
    main()
