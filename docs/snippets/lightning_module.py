import lightning as L
import torch

from focalrec import FocalLoss
from focalrec.integrations.torchmetrics import TorchmetricsRankingMetric


class Recommender(L.LightningModule):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = FocalLoss(alpha=0.25, gamma=2.0, reduction="sum_over_positives")
        # A fixed-size state, synchronized by Lightning.
        self.val_map = TorchmetricsRankingMetric("map", k=3)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        history, next_items = batch  # index lists (N, L) and (N, 3)
        loss = self.criterion(self.model(history), next_items)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        history, next_items = batch
        self.val_map.update(self.model(history), next_items, exclude=history)
        self.log("val/map@3", self.val_map, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)
