"""Models: the features/head protocol, the networks by name (built-in, torchvision, plug-in), weights, checkpoints.

Every model splits a deterministic backbone `features(x)` from a stochastic `head(f)` so MC dropout
samples only the head; `build_model` resolves `ModelConfig.name` through a registry of
`"module:factory"` paths (or a plug-in's "package.module:factory"), a backbone may start from a local
torchvision state_dict (`weights`), and checkpoints are loaded with `weights_only=True`.
"""

from dal_dist.models.base import (IMAGENET_MEAN, IMAGENET_STD, DALModel, ModelConfig, mc_head_probs, normalization,
                                  preprocess)
from dal_dist.models.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from dal_dist.models.embedding_head import EMBEDDING_HEAD, EmbeddingHead
from dal_dist.models.loss_prediction import LossPredictionModule, loss_prediction_loss
from dal_dist.models.nets import MnistCNN
from dal_dist.models.plugin import PluginModel, ray_runtime_env, runtime_env_for
from dal_dist.models.registry import (MODEL_FACTORIES, build_model, check_model_name, default_config, model_factory,
                                      register_model, task_model_names)
from dal_dist.models.vision import ResNet, TorchvisionNet
from dal_dist.models.weights import load_weights, read_state_dict

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "DALModel", "EMBEDDING_HEAD", "EmbeddingHead", "IMAGENET_MEAN",
           "IMAGENET_STD", "LossPredictionModule", "MODEL_FACTORIES", "MnistCNN", "ModelConfig", "PluginModel",
           "ResNet", "TorchvisionNet", "build_model", "check_model_name", "default_config", "load_checkpoint",
           "load_weights", "loss_prediction_loss", "mc_head_probs", "model_factory", "normalization", "preprocess",
           "ray_runtime_env", "read_state_dict", "register_model", "runtime_env_for", "save_checkpoint",
           "task_model_names"]
