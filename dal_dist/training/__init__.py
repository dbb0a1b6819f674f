"""Training: the classifier's fit loop and one worker skeleton, run in-process or through Ray Train.

`train` fits the task classifier on the labeled set (DDP over Ray Train workers, or `executor="local"`);
every model that trains does so as a `TrainingJob` through the same skeleton (`fit_and_checkpoint`):
CUDA determinism, warm start and the checkpoint written once. `evaluate` is plain torch, no Ray. `head.train_head` fits a head on cached embeddings (frozen backbone).
"""

from dal_dist.training.augment import augment_batch
from dal_dist.training.checks import check_training_arrays
from dal_dist.training.classifier import train, validation_split
from dal_dist.training.config import TrainConfig
from dal_dist.training.early_stopping import EarlyStopping
from dal_dist.training.evaluation import evaluate
from dal_dist.training.executor import EXECUTORS, check_executor, run_training_job
from dal_dist.training.fit import fit_classifier, make_optimizer
from dal_dist.training.head import evaluate_rows, fit_head, train_head
from dal_dist.training.objective import TrainingForward, training_objective
from dal_dist.training.ray_train import fit_on_ray_train
from dal_dist.training.worker import (TrainingJob, TrainResult, WorkerContext, fit_and_checkpoint, local_device,
                                      make_deterministic, warm_start_state)

__all__ = ["EXECUTORS", "EarlyStopping", "TrainConfig", "TrainResult", "TrainingForward", "TrainingJob",
           "WorkerContext", "augment_batch", "check_executor", "check_training_arrays", "evaluate",
           "evaluate_rows", "fit_and_checkpoint", "fit_classifier", "fit_head", "fit_on_ray_train", "local_device", "make_deterministic",
           "make_optimizer", "run_training_job", "train", "train_head", "training_objective", "validation_split",
           "warm_start_state"]
