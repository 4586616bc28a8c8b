import torch
import torch.nn.functional as F

from focalrec import FocalLoss, sigmoid_focal_loss

# Soft targets. focalrec computes alpha_t (1 - p_t)^gamma BCE, as torchvision does; kornia splits
# the target: alpha t (1 - p)^gamma (-log p) + (1 - alpha) (1 - t) p^gamma (-log(1 - p)).
x = torch.linspace(-4.0, 4.0, 81).unsqueeze(0)
t = torch.full_like(x, 0.2)
ours = sigmoid_focal_loss(x, t, reduction="none")
try:
    from kornia.losses import binary_focal_loss_with_logits
except ImportError:
    print("soft targets: kornia is not installed here")
else:
    theirs = binary_focal_loss_with_logits(x, t, alpha=0.25, gamma=2.0, reduction="none")
    gap = ((theirs - ours).abs() / ours).max().item()
    print(f"soft targets, t = 0.2, logits in [-4, 4]: kornia differs by up to {gap:.0%}")

    # A mean over a mask: focalrec divides by the kept entries, kornia's ignore_index by all.
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    labels = torch.tensor([[1.0, 0.0, -100.0, -100.0]])  # kornia's ignored entries
    keep = labels != -100
    ours_mean = sigmoid_focal_loss(logits, labels.clamp(min=0), weight=keep, reduction="mean")
    kornia_mean = binary_focal_loss_with_logits(logits, labels, reduction="mean")
    print(
        f"mean over 2 kept of 4 entries: focalrec {ours_mean.item():.4f}, "
        f"kornia {kornia_mean.item():.4f} (= sum / 4)"
    )

# gamma = 0 and alpha = None is BCE-with-logits, but more accurate at very negative logits,
# where float32 BCE-with-logits rounds log(1 + e^x) for a target of 0.
x = torch.tensor([-10.0, -20.0, -40.0])
zeros = torch.zeros(3)
exact = torch.log1p(torch.exp(x.double()))
bce = F.binary_cross_entropy_with_logits(x, zeros, reduction="none")
ours = sigmoid_focal_loss(x, zeros, alpha=None, gamma=0.0, reduction="none")
for name, value in (("BCE-with-logits", bce), ("focalrec", ours)):
    error = ((value.double() - exact).abs() / exact).tolist()
    print(f"target 0, logits {x.tolist()}: {name} relative error {[f'{e:.0e}' for e in error]}")

# TorchScript: the argument checks are Python that torch.jit cannot compile; torch.compile
# (fullgraph=True) and torch.export capture the loss instead.
try:
    torch.jit.script(FocalLoss())
except Exception as error:  # the error type is up to torch.jit
    print(f"torch.jit.script(FocalLoss()): not supported ({type(error).__name__})")
