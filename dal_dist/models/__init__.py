"""Models: the features/head protocol, the built-in networks and their registry, checkpoints.

Every model splits a deterministic backbone `features(x)` from a stochastic `head(f)` so MC dropout
samples only the head; `build_model` resolves `ModelConfig.name` through a registry of
`"module:factory"` paths, and checkpoints are loaded with `weights_only=True`.
"""

from dal_dist.models.base import DALModel, ModelConfig, default_config, mc_head_probs, preprocess
from dal_dist.models.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from dal_dist.models.loss_prediction import LossPredictionModule, loss_prediction_loss
from dal_dist.models.nets import MODEL_FACTORIES, MnistCNN, ResNet18, build_model, model_factory

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "DALModel", "LossPredictionModule", "MODEL_FACTORIES",
           "MnistCNN", "ModelConfig", "ResNet18", "build_model", "default_config", "load_checkpoint",
           "loss_prediction_loss", "mc_head_probs", "model_factory", "preprocess", "save_checkpoint"]
