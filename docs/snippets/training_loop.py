import torch
from torch import nn

from focalrec import FocalLoss, MeanAveragePrecisionAtK, init_prior_bias_

torch.manual_seed(0)
num_users, num_items, dim = 2048, 500, 16
features = torch.randn(num_users, dim)
item_vectors = torch.randn(num_items, dim)
targets = torch.topk(features @ item_vectors.T, 3).indices  # index list (N, 3): no multi-hot
train, valid = torch.arange(1792), torch.arange(1792, num_users)

model = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, num_items))
init_prior_bias_(model[-1], 3 / num_items, alpha=0.25, gamma=2.0)  # focal-aware prior bias
criterion = FocalLoss(alpha=0.25, gamma=2.0, reduction="sum_over_positives")
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
metric = MeanAveragePrecisionAtK(k=3)  # streaming: fixed-size state, all-reduced under DDP

for epoch in range(5):
    for batch in train[torch.randperm(len(train))].split(256):
        loss = criterion(model(features[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    metric.reset()
    with torch.no_grad():
        for batch in valid.split(128):
            metric.update(model(features[batch]), targets[batch])
    print(f"epoch {epoch}: train loss {loss.item():.4f}, valid mAP@3 {metric.compute().item():.4f}")
