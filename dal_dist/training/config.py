"""Per-round training hyper-parameters (`train:` in the driver's YAML), validated by pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    """Per-round training hyper-parameters; embedded in the driver's YAML, so unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1, description="global batch: split evenly over the workers")
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0)
    lr_milestones: list[int] = Field(default_factory=list, description="epochs at which lr *= lr_gamma")
    lr_gamma: float = Field(0.1, gt=0)
    warm_start: bool = Field(False, description="start from the previous round's checkpoint, "
                                                "else from scratch with the model's seed")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="labeled fraction held out for validation")
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without a better "
                                                "val_acc before stopping; the best epoch is kept")
    learning_loss: bool = False
    ll_weight: float = Field(1.0, ge=0, description="λ (Yoo & Kweon 2019)")
    ll_margin: float = Field(1.0, ge=0, description="ξ (Yoo & Kweon 2019)")
    ll_stop_grad_epoch: int | None = Field(None, ge=0, description="E: detach the feature maps fed to "
                                           "the loss module after E epochs (paper: 120 of 200)")
    augment: Literal["none", "crop", "flip_crop"] = Field(
        "none", description="random shift (pad + crop) and horizontal flip, seeded per worker")
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    seed: int = Field(0, ge=0, description="shuffling, dropout and the validation split")

    @model_validator(mode="after")
    def _patience_needs_validation(self) -> "TrainConfig":
        if self.early_stopping_patience is not None and self.val_fraction == 0:
            raise ValueError("early_stopping_patience needs val_fraction > 0 (it watches val_acc)")
        return self
