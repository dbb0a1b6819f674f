"""Embed once: `id, embedding` of every pool row, on Ray, under the scoring job's staging → verify → publish."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torchvision
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models import default_config, preprocess
from dal_dist.pool import write_pool
from dal_dist.scoring.embed import embed_pool


@pytest.fixture
def rgb_pool(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (70, 32, 32, 3), dtype=np.uint8)
    write_pool(tmp_path / "pool", x, rng.integers(0, 3, 70), chunk_rows=16)
    return tmp_path / "pool", x


def test_resnet18_with_weights_embeds_every_row_like_torchvision(tmp_path, rgb_pool, ray_local):
    pool, x = rgb_pool
    torch.manual_seed(11)
    tv = torchvision.models.resnet18().eval()
    torch.save(tv.state_dict(), tmp_path / "r18.pt")
    summary = embed_pool(pool, tmp_path / "emb", model="resnet18", weights=tmp_path / "r18.pt", image_size=32,
                         workers=2, batch_size=16, progress=False)
    assert (summary.rows, summary.rejects, summary.workers) == (70, 0, 2)
    table = pq.read_table(tmp_path / "emb").sort_by("id")
    assert table.column_names == ["id", "embedding"] and table.column("id").to_pylist() == list(range(70))
    etype = table.schema.field("embedding").type
    assert (etype.list_size, str(etype.value_type), etype.value_field.nullable) == (512, "halffloat", False)
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    tv.fc = nn.Identity()
    with torch.no_grad():
        ref = tv(preprocess(torch.from_numpy(x), default_config("resnet18", 3, image_size=32))).numpy()
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.999
    marker = json.loads((tmp_path / "emb" / "_dal_scores.json").read_text())
    assert marker["kind"] == "embeddings" and marker["model"] == "resnet18" and marker["rows"] == 70
    # The same again is refused without --overwrite, and replaces the output with it (in this process).
    with pytest.raises(DalDistError, match="output directory exists"):
        embed_pool(pool, tmp_path / "emb", model="resnet18", weights=tmp_path / "r18.pt", image_size=32,
                   executor="local")
    embed_pool(pool, tmp_path / "emb", model="resnet18", weights=tmp_path / "r18.pt", image_size=32,
               embedding_dtype="float32", executor="local", overwrite=True)
    again = pq.read_table(tmp_path / "emb").sort_by("id")
    np.testing.assert_allclose(np.array(again.column("embedding").to_pylist()), emb, rtol=2e-3, atol=2e-3)


def test_bad_embed_requests_fail_before_any_work(tmp_path, rgb_pool):
    pool, _ = rgb_pool
    out = tmp_path / "emb"
    with pytest.raises(DalDistError, match="exactly one of --model"):
        embed_pool(pool, out, executor="local")
    with pytest.raises(DalDistError, match="unknown name 'vgg'"):
        embed_pool(pool, out, model="vgg", executor="local")
    with pytest.raises(DalDistError, match="weights .*file not found"):
        embed_pool(pool, out, model="resnet18", weights=tmp_path / "none.pt", executor="local")
    with pytest.raises(DalDistError, match="--embedding-dtype must be float16 or float32"):
        embed_pool(pool, out, model="resnet18", embedding_dtype="int8", executor="local")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pool"]
