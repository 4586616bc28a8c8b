import math

import torch
from torch import nn

from focalrec import class_priors, focal_prior_bias, init_prior_bias_, prior_bias

printed = math.log((1 - 0.01) / 0.01)  # the sign the write-up printed
print(
    f"+log((1 - 0.01) / 0.01) = {printed:+.3f}, sigmoid {torch.sigmoid(torch.tensor(printed)):.3f}"
)
right = prior_bias(0.01)  # -log((1 - pi) / pi)
print(f"prior_bias(0.01)        = {right:+.3f}, sigmoid {torch.sigmoid(torch.tensor(right)):.3f}")
focal = focal_prior_bias(0.01, alpha=0.25, gamma=2.0)  # minimizes the expected focal loss
print(f"focal_prior_bias(0.01, alpha=0.25, gamma=2) = {focal:+.3f}")

# Per-class priors from index-list labels: 3 rows, 4 classes, class 3 never seen.
targets = torch.tensor([[0, 1], [0, -1], [2, 0]])
priors = class_priors(targets, num_classes=4, smoothing=1.0)  # (n_c + 1) / (N + 2)
print("class_priors:    ", [round(p, 3) for p in priors.tolist()])

layer = nn.Linear(16, 4)
init_prior_bias_(layer, priors)  # the logit of each class's rate
print("per-class bias:  ", [round(b, 3) for b in layer.bias.tolist()])
init_prior_bias_(layer, priors, alpha=0.25, gamma=2.0)  # the focal loss's optimum per class
print("focal-aware bias:", [round(b, 3) for b in layer.bias.tolist()])
