import torch

from focalrec import map_at_k, ranking_metrics_at_k, topk_items

# 2 users, 6 items. User 0 has 4 relevant items, user 1 none.
scores = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.0, 0.3], [0.5, 0.5, 0.5, 0.1, 0.2, 0.0]])
relevant = torch.tensor([[1, 2, 4, 5], [-1, -1, -1, -1]])

# Ties are broken by the lower item index, the same on every device: row 1 gives [0, 1, 2].
print("top 3:", topk_items(scores, 3).tolist())

# The AP@k denominator: Kaggle's min(|R|, k), trec_eval's |R|, torchmetrics' number of hits.
for denominator in ("min_k", "relevant", "hits"):
    ap = map_at_k(scores[:1], relevant[:1], 3, denominator=denominator)
    print(f"AP@3 of user 0, denominator={denominator!r}: {ap.item():.4f}")

# A user with no relevant item scores 0 and counts (Kaggle), or is left out of the mean.
print("mAP@3, empty_targets='zero':", round(map_at_k(scores, relevant, 3).item(), 4))
print(
    "mAP@3, empty_targets='skip':",
    round(map_at_k(scores, relevant, 3, empty_targets="skip").item(), 4),
)

# Ranked lists as index lists: a repeated item counts only at its first position.
ranked = torch.tensor([[1, 1, 2]])
print("AP@3 of [1, 1, 2]:", round(map_at_k(ranked, relevant[:1], 3).item(), 4))

# Items a user already has are never recommended; the caller's scores are not modified.
history = torch.tensor([[0, 1], [0, -1]])
print("top 3 excluding history:", topk_items(scores, 3, exclude=history).tolist())

# The whole family from one top-k pass.
family = ranking_metrics_at_k(scores[:1], relevant[:1], 3, exclude=history[:1])
print({name: round(value.item(), 4) for name, value in family.items()})
