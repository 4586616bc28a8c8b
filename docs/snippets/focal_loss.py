import torch

from focalrec import FocalLoss, index_list_to_dense, sigmoid_focal_loss

logits = torch.randn(4, 6, requires_grad=True)
positives = torch.tensor([[0, 3, -1], [5, -1, -1], [-1, -1, -1], [2, 2, 4]])  # index list

# The index list and its dense equivalent give the same value and gradient.
sparse = sigmoid_focal_loss(logits, positives, alpha=0.25, gamma=2.0, reduction="sum")
dense = sigmoid_focal_loss(logits, index_list_to_dense(positives, 6), reduction="sum")
torch.testing.assert_close(sparse, dense)

# RetinaNet's normalization: the sum over the number of positive labels (5 here).
criterion = FocalLoss(alpha=0.25, gamma=2.0, reduction="sum_over_positives")
torch.testing.assert_close(criterion(logits, positives), sparse / 5)

# A keep-mask: "mean" averages over the kept entries only.
keep = torch.ones(4, 6, dtype=torch.bool)
keep[2] = False  # e.g. a padded row
masked = sigmoid_focal_loss(logits, positives, reduction="mean", weight=keep)
elementwise = sigmoid_focal_loss(logits, positives, reduction="none")
torch.testing.assert_close(masked, elementwise[keep].mean())

# Per-class alpha, and no weighting at all.
per_class = sigmoid_focal_loss(logits, positives, alpha=torch.full((6,), 0.25))
unweighted = sigmoid_focal_loss(logits, positives, alpha=None, gamma=0.5)
per_class.backward()
