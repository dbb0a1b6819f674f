"""k-center initial labeled set on the real MNIST test images: more classes covered than random."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.selection import kcenter_greedy, random_ids, select
from dal_dist.selection.init import pixel_pca_embeddings


@pytest.fixture(scope="module")
def mnist_pool(tmp_path_factory, mnist_test_dir):
    from dal_dist.pool import ingest_mnist_idx

    out = tmp_path_factory.mktemp("mnist") / "pool"
    ingest_mnist_idx(mnist_test_dir / "t10k-images-idx3-ubyte.gz", mnist_test_dir / "t10k-labels-idx1-ubyte.gz", out)
    t = pq.read_table(out, columns=["id", "label"])
    return out, dict(zip(t.column("id").to_pylist(), t.column("label").to_pylist()))


def test_kcenter_init_covers_more_classes_than_random(mnist_pool):
    pool, labels = mnist_pool
    table = select("kcenter-init", 20, pool=pool, seed=0)  # the CLI path, end to end
    picked = table.column("id").to_pylist()
    assert len(set(picked)) == 20 and set(picked) <= labels.keys()
    assert np.all(np.diff(table.column("radius").to_numpy()) <= 0)
    # Same embeddings, first center varied by the seed (what kcenter-init does per seed).
    ids, emb = pixel_pca_embeddings(pool, seed=0)
    kc = [len({labels[i] for i in ids[kcenter_greedy(emb, None, 20, seed=s)[0]].tolist()}) for s in range(10)]
    rnd = [len({labels[i] for i in random_ids(ids, 20, s).tolist()}) for s in range(200)]
    assert np.mean(kc) > np.mean(rnd), (np.mean(kc), np.mean(rnd))


def test_kcenter_init_bad_k(mnist_pool):
    pool, labels = mnist_pool
    with pytest.raises(DalDistError, match="larger than the number of pool images"):
        select("kcenter-init", len(labels) + 1, pool=pool)
    with pytest.raises(DalDistError, match="positive"):
        select("kcenter-init", 0, pool=pool)


def test_kcenter_init_all_null_image_column_is_one_line_error(tmp_path):
    from dal_dist.pool import write_pool

    pool = tmp_path / "pool"
    write_pool(pool, np.zeros((20, 8, 8, 1), np.uint8), np.zeros(20, np.int64))
    for f in pool.glob("part-*.parquet"):
        t = pq.read_table(f)
        i = t.schema.get_field_index("image")
        pq.write_table(t.set_column(i, t.schema.field(i), pa.nulls(t.num_rows, t.schema.field(i).type)), f)
    with pytest.raises(DalDistError, match=r"pool: fewer than 2 decodable images .* e\.g\. id \d+: image: null") as e:
        select("kcenter-init", 3, pool=pool)
    assert "\n" not in str(e.value)
