"""AdaHessian (Yao et al. 2021) from torch-optimizer, fixed for 3-D and 5-D convolution kernels.

torch-optimizer 0.3.0 averages the Hutchinson estimate |diag(H)| over the kernel's spatial
dims only for 4-D (Conv2d) weights and leaves 3-D (Conv1d) and 5-D (Conv3d) weights without an
estimate (UnboundLocalError). Here every weight of dim >= 3 is averaged over dims 2.., which
is the original rule for 4-D weights.
"""

import torch
import torch_optimizer
from torch import Tensor


def spatially_averaged(hessian_diagonal: Tensor) -> Tensor:
    """|diag(H)| of a parameter, averaged over the spatial dims of a conv kernel (out, in, *k).

    Args:
        hessian_diagonal: Hutchinson estimate v * (H v) of a parameter, any shape.

    Returns:
        Tensor broadcastable to the parameter: |.| itself for dim <= 2, else its mean over
        dims 2.. (keepdim).
    """
    magnitude = hessian_diagonal.abs()
    if magnitude.dim() <= 2:
        return magnitude
    return magnitude.mean(dim=tuple(range(2, magnitude.dim())), keepdim=True)


class Adahessian(torch_optimizer.Adahessian):
    """torch_optimizer.Adahessian (hessian_power 0.5 by default) for kernels of any dimension.

    Step it after `loss.backward(create_graph=True)`. Updates are identical to the original
    wherever the original runs (parameters of dim 1, 2 or 4), for the same random state.
    """

    def get_trace(self, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """Hutchinson estimate of |diag(H)| with one Rademacher vector v: |v * (H v)| = |H v|.

        Args:
            params: parameters with a gradient.
            grads: their gradients, still attached to the graph (create_graph=True).

        Returns:
            One estimate per parameter, spatially averaged for conv kernels.
        """
        for index, grad in enumerate(grads):
            if grad.grad_fn is None:
                raise RuntimeError(f"Gradient {index} has no grad_fn: call loss.backward(create_graph=True)")
        rademacher = [2 * torch.randint_like(p, high=2) - 1 for p in params]
        hessian_v = torch.autograd.grad(grads, params, grad_outputs=rademacher, retain_graph=True)
        return [spatially_averaged(hv) for hv in hessian_v]
