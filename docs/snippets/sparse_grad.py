"""Sampled negatives with sparse gradients: SparseAdam moves the scored rows of the layer only."""

import torch

from focalrec import LinearFocalLoss, sample_negatives

torch.manual_seed(0)
rows, dim, num_items, k = 256, 32, 100_000, 64
head = LinearFocalLoss(dim, num_items, sparse_grad=True)
optimizer = torch.optim.SparseAdam(list(head.parameters()), lr=1e-2)
features = torch.randn(rows, dim)  # e.g. a sequence model's states
next_item = torch.randint(0, num_items, (rows, 1))
before = head.weight.detach().clone()

negatives = sample_negatives(rows, k, num_items, exclude=next_item)
loss = head(features, next_item, negatives=negatives)
optimizer.zero_grad()
loss.backward()
optimizer.step()

assert head.weight.grad is not None
moved = int((head.weight.detach() != before).any(dim=1).sum())
scored = int(torch.cat([next_item, negatives], dim=1).unique().numel())
print(f"weight gradient: {head.weight.grad.layout}, {head.weight.grad._nnz()} stored rows")
print(f"rows moved by the step: {moved:,} of {num_items:,} ({scored:,} scored)")
