"""gBCE (gSASRec) over sampled negatives through the fused layer, checked against its formula."""

import torch
import torch.nn.functional as F

from focalrec import gbce_beta, linear_sigmoid_focal_loss, sample_negatives

torch.manual_seed(0)
rows, dim, num_items, k, t = 128, 64, 3416, 256, 0.75
features = torch.randn(rows, dim, requires_grad=True)  # e.g. a sequence model's states
item_layer = torch.nn.Linear(dim, num_items)
next_item = torch.randint(0, num_items, (rows, 1))  # one positive per row
negatives = sample_negatives(rows, k, num_items, exclude=next_item)  # (rows, k) item ids
beta = gbce_beta(k, num_items, t)

# gBCE is BCE (gamma = 0, alpha = None) with the positive term weighted by beta;
# "mean" averages over the rows' 1 + k scores.
loss = linear_sigmoid_focal_loss(
    features,
    item_layer.weight,
    next_item,
    linear_bias=item_layer.bias,
    negatives=negatives,
    alpha=None,
    gamma=0.0,
    pos_weight=beta,
)
loss.backward()  # gradients reach the rows of the positives and the negatives only

# gSASRec's loss written out, from the logits of the scored items.
scores = item_layer(features)  # (rows, C): formed here only for the check
positive, negative = scores.gather(1, next_item), scores.gather(1, negatives)
gbce = (beta * F.softplus(-positive).sum() + F.softplus(negative).sum()) / (rows * (1 + k))
print(f"beta = {beta:.6f}, fused sampled gBCE {loss.item():.6f}, written out {gbce.item():.6f}")
assert torch.allclose(loss, gbce)
