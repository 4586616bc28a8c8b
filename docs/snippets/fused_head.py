import torch
from torch import nn

from focalrec import FocalLoss, LinearFocalLoss

torch.manual_seed(0)
num_items, dim = 20_000, 64
trunk = nn.Sequential(nn.Linear(32, dim), nn.ReLU())
head = LinearFocalLoss(dim, num_items, prior=3 / num_items, reduction="sum_over_positives")

# The same layer, unfused: nn.Linear followed by FocalLoss, with the same weight and bias.
linear = nn.Linear(dim, num_items)
linear.load_state_dict(head.state_dict())
criterion = FocalLoss(reduction="sum_over_positives")

inputs = torch.randn(512, 32)
targets = torch.randint(0, num_items, (512, 3))  # index lists: 3 positives per row
features = trunk(inputs)
fused, unfused = head(features, targets), criterion(linear(features), targets)
print(f"fused {fused.item():.7f}, unfused {unfused.item():.7f}")

optimizer = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=1e-3)
for step in range(3):
    loss = head(trunk(inputs), targets)  # never an (N, C) tensor, forward or backward
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    print(f"step {step}: loss {loss.item():.6f}")

with torch.no_grad():  # logits when they are wanted: here 3 items for 2 rows
    print(head.scores(trunk(inputs[:2]), items=torch.tensor([0, 17, 4242])))
