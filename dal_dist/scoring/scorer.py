"""The per-batch work of scoring, without Ray: decode → preprocess → backbone once → T head samples → scores.

`BatchScorer` is what Ray Data's actors (and the in-process executor) call on each Arrow batch; its
output follows `output_schema`. What one batch may allocate is bounded before any work: the model
input (`check_batch_memory`) and the T×B copies of the features the MC head runs on, which are split
into sub-batches of `mc_chunk_rows` images when a whole batch would not fit.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch

from dal_dist import fs as fsx
from dal_dist.device import torch_device
from dal_dist.errors import DalDistError
from dal_dist.scoring.acquisition import score_all

# Most the MC head's T×B feature copies (and their dropout masks and activations) may take at once.
HEAD_BYTES_BUDGET = 1 << 30
# Most one batch's model input (float32 N×C×S×S) and decoded images (uint8) may take.
INPUT_BYTES_BUDGET = 2 << 30
MAX_MC_SAMPLES = 10_000
EMBEDDING_SOURCES = ("head", "backbone")
EMBEDDING_DTYPES = ("float16", "float32")
PRECISIONS = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # --precision: the autocast dtype
OVERLAPS = {"auto": None, "on": True, "off": False}  # --overlap: decode/copy of batch i+1 beside compute of i
DECODES = ("auto", "cpu", "device")  # --decode: JPEG rows decoded on the host (PIL) or the scoring device


def check_precision(precision: str | None) -> str | None:
    """A known --precision, before any work; None for "auto" (decided per actor by its device)."""
    if precision is not None and precision != "auto" and precision not in PRECISIONS:
        raise DalDistError(f"--precision must be one of {', '.join(PRECISIONS)} or auto, got {precision!r}")
    return None if precision == "auto" else precision


def resolve_precision(precision: str | None, device: Any) -> str:
    """The autocast precision on `device`: as asked, else bf16 on CUDA (tensor cores) and fp32 on CPU."""
    precision = check_precision(precision)
    if precision is None:
        return "bf16" if getattr(device, "type", str(device)) == "cuda" else "fp32"
    return precision


def check_decode(decode: str) -> str:
    """A known --decode, before any work: auto (on the device when it is CUDA), cpu (PIL) or device (torchvision)."""
    if decode not in DECODES:
        raise DalDistError(f"--decode must be one of {', '.join(DECODES)}, got {decode!r}")
    return decode


def check_overlap(overlap: str) -> bool | None:
    """--overlap auto|on|off as `score_pool` takes it (None: decided by the actor's device), before any work."""
    if overlap not in OVERLAPS:
        raise DalDistError(f"--overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
    return OVERLAPS[overlap]


def resolve_overlap(overlap: bool | None, device: Any) -> bool:
    """Whether batch i+1's decode and copy run beside batch i's compute: as asked, else on CUDA only (on a CPU
    the two would share the same cores)."""
    return bool(overlap) if overlap is not None else getattr(device, "type", str(device)) == "cuda"


def fetched(value: Any) -> Any:
    """An actor argument as itself: Ray hands large ones over as [ObjectRef] (nested, so it is fetched once)."""
    if isinstance(value, list):
        import ray

        return ray.get(value[0])
    return value


CONVERTIBLE_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: decode converts any of these into any other


@dataclass
class PreparedBatch:
    """A batch's model inputs on the scoring device, ready to score: what `prepare` hands `score_prepared`."""

    ids: np.ndarray  # int64 (n,)
    x: torch.Tensor | None  # model inputs on the device; None when no row is left to score
    is_labeled: np.ndarray  # bool (n,): embedding only
    ready: Any = None  # CUDA event recorded after the copy on the preparing thread's stream; None elsewhere


class BatchScorer:
    """Decode → preprocess → backbone once → T head samples → acquisition scores, one Arrow batch at a time.

    Built once per actor: the checkpoint bytes arrive once (object store), not with every batch. A call is
    two steps: `prepare` (decode, rejects, copy to the device, preprocess) and `score_prepared` (the model).
    Two calls may run at once on two threads (Ray Data's multi-threaded actors, `score_batches`): the
    model runs one batch at a time under a lock, so batch i+1 is decoded and copied while batch i computes,
    on its own CUDA stream; scores do not depend on the overlap (dropout seeded per batch).
    """

    def __init__(self, checkpoint: bytes | Any, acquisitions: list[str], mc_samples: int = 20,
                 labeled_ids: np.ndarray | Any | None = None, embed_labeled: bool = False,
                 embedding_source: str = "head", embedding_dtype: str = "float16", seed: int = 0,
                 threads: int | None = None, rejects_dir: fsx.Location | None = None,
                 progress: Any | None = None, device: str | None = None, head_bytes: int | None = None,
                 keep_probs: bool = False, exclude_ids: np.ndarray | Any | None = None,
                 write_embedding: bool = True, precision: str | None = None, decode: str = "auto",
                 overlap: bool | None = None):
        from dal_dist.models import load_checkpoint

        checkpoint, labeled_ids, exclude_ids = fetched(checkpoint), fetched(labeled_ids), fetched(exclude_ids)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch_device(device)
        self.model = load_checkpoint_bytes(checkpoint, load_checkpoint).to(self.device).eval()
        # Forward passes autocast to bf16/fp16 where asked (default bf16 on CUDA); every score is computed
        # in float32 from the softmax, which `mc_head_probs` returns in float32 whatever the autocast.
        self.precision = resolve_precision(precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
            self.model = self.model.to(memory_format=torch.channels_last)
        self.config = self.model.config
        # JPEG rows decoded where the model runs, a batch at a time (`pool.jpeg`), not row by row on the host.
        self.device_decode = check_decode(decode) == "device" or (decode == "auto" and self.device.type == "cuda")
        if self.device_decode:
            import torchvision.transforms.v2.functional  # noqa: F401 - seconds of imports: here, not in a batch
        self.acquisitions = list(acquisitions)
        if "sraal" in self.acquisitions and not hasattr(self.model, "state_score"):
            raise DalDistError(f"`sraal` needs an SRAAL checkpoint (model 'sraal' with a state discriminator); "
                               f"this one holds model {self.config.name!r}")
        self.mc_samples = mc_samples
        self.chunk_rows = mc_chunk_rows(mc_samples, head_row_bytes(self.model),
                                        HEAD_BYTES_BUDGET if head_bytes is None else head_bytes)
        self.labeled_ids = np.sort(np.asarray(labeled_ids, dtype=np.int64)) if labeled_ids is not None else None
        self.embed_labeled = embed_labeled
        # Rows not scored at all (not even embedded): a round that scores a random subset of the pool.
        self.exclude_ids = np.sort(np.asarray(exclude_ids, dtype=np.int64)) if exclude_ids is not None else None
        self.embedding_source = embedding_source
        self.embedding_dtype = np.float16 if embedding_dtype == "float16" else np.float32
        self.seed = seed
        self.rejects_dir = rejects_dir
        self.progress = progress
        self.keep_probs = keep_probs  # BADGE (Ash et al. 2020): `probs`, the softmax with dropout off
        self.write_embedding = write_embedding  # off: a top-k round over cached embeddings need not copy them
        self.overlap = resolve_overlap(overlap, self.device)  # what `score_batches` does in one process
        self.model_lock = threading.Lock()  # one batch in the model at a time, whatever the threads
        self.streams = threading.local()  # each preparing thread's CUDA copy stream

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.score_prepared(self.prepare(batch))

    def prepare(self, batch: pa.Table) -> PreparedBatch:
        """The batch's rows to score, decoded (bad rows written as rejects) and on the device as model inputs."""
        from dal_dist.pool import decode_photos, decode_photos_on_device

        batch, is_labeled = self.without_labeled(batch)
        # Each row on its own to the model's size (photo transform); raw rows already that size pass as they are.
        # With device decode the JPEG rows are decoded together on the scoring device, the images stay there.
        # Rows PIL decodes are spread over the actor's threads (its CPUs: what feeds a GPU actor).
        threads = torch.get_num_threads()
        with self.copy_stream():
            if self.device_decode:
                decoded = decode_photos_on_device(batch, self.config.image_size, self.config.in_channels,
                                                  self.device, threads)
            else:
                decoded = decode_photos(batch, self.config.image_size, self.config.in_channels, threads)
            if len(decoded.reject_ids):
                self.write_rejects(decoded.reject_ids, decoded.reject_reasons)
                keep = ~np.isin(batch.column("id").to_numpy(), decoded.reject_ids)
                is_labeled = is_labeled[keep]
            return self.prepared(decoded.ids, self.image_inputs(decoded.images) if len(decoded.ids) else None,
                                 is_labeled)

    def copy_stream(self) -> Any:
        """On CUDA, this thread's own stream for decode and copy (so they run beside another batch's compute)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        if getattr(self.streams, "stream", None) is None:
            self.streams.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self.streams.stream)

    def prepared(self, ids: np.ndarray, x: torch.Tensor | None, is_labeled: np.ndarray) -> PreparedBatch:
        """`PreparedBatch`, with an event marking the end of its copy when made on a CUDA stream."""
        ready = None
        if x is not None and self.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()  # on the current stream: the preparing thread's copy stream
        return PreparedBatch(ids, x, is_labeled, ready)

    def score_prepared(self, p: PreparedBatch) -> pa.Table:
        """Score a prepared batch: the model, one batch at a time, after the batch's copy has finished."""
        with self.model_lock:
            if p.ready is not None:
                torch.cuda.current_stream(self.device).wait_event(p.ready)
                p.x.record_stream(torch.cuda.current_stream(self.device))  # freed only once compute is done
            return self.reported(self.score_inputs(p.ids, p.x, p.is_labeled) if p.x is not None
                                 else self.empty_table())

    def reported(self, out: pa.Table) -> pa.Table:
        """`out`, its rows counted on the job's progress actor (when there is one)."""
        if self.progress is not None and out.num_rows:
            self.progress.report.remote(out.num_rows, time.time())
        return out

    def without_labeled(self, batch: pa.Table | dict) -> tuple[pa.Table, np.ndarray]:
        """(the batch less its excluded rows and its labeled rows unless they are embedded too, which of its
        rows are labeled)."""
        if isinstance(batch, dict):
            batch = pa.table(batch)
        if self.exclude_ids is not None and len(self.exclude_ids):
            out = np.isin(batch.column("id").to_numpy(), self.exclude_ids, assume_unique=True)
            if out.any():
                batch = batch.filter(pa.array(~out))
        ids = batch.column("id").to_numpy()
        if self.labeled_ids is not None and len(self.labeled_ids):
            is_labeled = np.isin(ids, self.labeled_ids, assume_unique=True)
            if is_labeled.any() and not self.embed_labeled:
                return batch.filter(pa.array(~is_labeled)), np.zeros(batch.num_rows - int(is_labeled.sum()), bool)
            return batch, is_labeled
        return batch, np.zeros(batch.num_rows, dtype=bool)

    def score_images(self, ids: np.ndarray, images: np.ndarray, is_labeled: np.ndarray | None = None) -> pa.Table:
        """Score uint8 N×H×W×C images; rows flagged labeled get an embedding only (scores null)."""
        if len(ids) == 0:
            return self.empty_table()
        return self.score_inputs(ids, self.image_inputs(images), is_labeled)

    @torch.inference_mode()
    def image_inputs(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 N×H×W×C images as the model's inputs on its device (channels_last on CUDA)."""
        from dal_dist.models import preprocess

        x = preprocess(self.to_device(images), self.config)
        if self.device.type == "cuda" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def to_device(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images on the scoring device: from pinned memory, without blocking, on CUDA; a tensor decoded
        there already is taken as it is."""
        if isinstance(images, torch.Tensor):
            return images.to(self.device)
        t = torch.from_numpy(np.array(images, copy=not images.flags.writeable))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def autocast(self) -> Any:
        """The forward passes' autocast context (a no-op at fp32)."""
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, PRECISIONS[self.precision]),
                              enabled=self.precision != "fp32")

    @torch.inference_mode()
    def score_inputs(self, ids: np.ndarray, x: torch.Tensor, is_labeled: np.ndarray | None = None) -> pa.Table:
        """Score model inputs (preprocessed images, or embedding rows for a head): backbone once, T head samples."""
        n = len(ids)
        if is_labeled is None:
            is_labeled = np.zeros(n, dtype=bool)
        if n == 0:
            return self.empty_table()
        with self.autocast():
            f, levels = self.model.feature_levels(x)
            emb = (self.model.embed(f) if self.embedding_source == "head" else f).float()
            scores, pred, conf = self.mc_scores(ids, f)
            if "pred_loss" in self.acquisitions:  # Learning Loss (Yoo & Kweon 2019): predicted target loss
                scores["pred_loss"] = self.model.loss_module(levels).float()
            if "sraal" in self.acquisitions:  # SRAAL (Zhang et al. 2020): discriminator's P(unlabeled state)
                scores["sraal"] = self.model.state_score(f).float()
            # BADGE's mean probabilities: the head with dropout off (eval mode), in float32.
            probs_off = torch.softmax(self.model.head(f).float(), dim=-1) if self.keep_probs else None
        mask = pa.array(is_labeled) if is_labeled.any() else None
        cols: dict[str, pa.Array] = {"id": pa.array(ids, type=pa.int64())}
        for name in self.acquisitions:
            cols[name] = masked(scores[name].cpu().numpy().astype(np.float32), mask)
        if self.write_embedding:
            emb_np = emb.to(torch.float16 if self.embedding_dtype == np.float16 else torch.float32).cpu().numpy()
            cols["embedding"] = vector_array(emb_np)
        cols["pred"] = masked(pred.cpu().numpy().astype(np.int64), mask)
        cols["confidence"] = masked(conf.cpu().numpy().astype(np.float32), mask)
        cols["labeled"] = pa.array(is_labeled)
        if probs_off is not None:
            cols["probs"] = vector_array(probs_off.cpu().numpy().astype(np.float32))
        return pa.table(cols)

    def mc_scores(self, ids: np.ndarray, f: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                                    torch.Tensor]:
        """Acquisition scores, predicted class and its confidence from T head samples, sub-batch by sub-batch.

        Each sub-batch seeds its dropout masks from (seed, its ids), so re-running a batch reproduces its
        scores; a batch that fits in one sub-batch draws exactly what an unsplit batch always drew.
        """
        from dal_dist.models import mc_head_probs

        parts: list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]] = []
        for s in range(0, len(ids), self.chunk_rows):
            torch.manual_seed(batch_seed(self.seed, ids[s:s + self.chunk_rows]))
            probs = mc_head_probs(self.model, f[s:s + self.chunk_rows], self.mc_samples)
            conf, pred = probs.mean(dim=0).max(dim=-1)
            parts.append((score_all(probs, self.acquisitions), pred, conf))
        if len(parts) == 1:
            return parts[0]
        scores = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
        return scores, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])

    def empty_table(self) -> pa.Table:
        """A zero-row table of this scorer's output schema."""
        return output_schema(self.acquisitions, embed_dim(self.model, self.embedding_source),
                             self.embedding_dtype, self.config.num_classes if self.keep_probs else None,
                             embedding=self.write_embedding).empty_table()

    def write_rejects(self, ids: np.ndarray, reasons: list[str]) -> None:
        """One Parquet file of (id, reason) per batch with bad rows, named by content (retries overwrite it)."""
        if not self.rejects_dir:
            return
        local = fsx.is_local(self.rejects_dir)
        if local is not None and not local.parent.is_dir():
            return  # the job was abandoned and its staging removed: do not bring it back
        ids = np.asarray(ids, dtype=np.int64)
        name = f"part-{int(ids.min())}-{hashlib.sha1(ids.tobytes()).hexdigest()[:12]}.parquet"
        fsx.write_table_atomic(fsx.join(self.rejects_dir, name),
                               pa.table({"id": pa.array(ids, pa.int64()), "reason": pa.array(reasons, pa.string())}))


def score_batches(scorer: BatchScorer, batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Each batch's scores, in order; with `scorer.overlap`, batch i+1 is prepared on a second thread while
    batch i is in the model (the in-process counterpart of Ray Data's two calls per actor)."""
    if not scorer.overlap:
        for batch in batches:
            yield scorer(batch)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="dal-dist-prepare") as pool:
        pending = None
        for batch in batches:
            following = pool.submit(scorer.prepare, batch)
            if pending is not None:
                yield scorer.score_prepared(pending.result())
            pending = following
        if pending is not None:
            yield scorer.score_prepared(pending.result())


def output_schema(acquisitions: list[str], embed_dim: int, embedding_dtype: Any = np.float16,
                  probs_classes: int | None = None, embedding: bool = True) -> pa.Schema:
    """Schema of the scores dataset (see docs/architecture.md); `probs` (C float32) only with keep_probs,
    `embedding` unless left out (a top-k round over cached embeddings)."""
    etype = pa.float16() if np.dtype(embedding_dtype) == np.float16 else pa.float32()
    fields = [pa.field("id", pa.int64(), nullable=False)]
    fields += [pa.field(a, pa.float32()) for a in acquisitions]
    fields += [pa.field("embedding", vector_type(etype, embed_dim))] if embedding else []
    fields += [pa.field("pred", pa.int64()), pa.field("confidence", pa.float32()), pa.field("labeled", pa.bool_())]
    if probs_classes is not None:
        fields.append(pa.field("probs", vector_type(pa.float32(), probs_classes)))
    return pa.schema(fields)


def vector_type(value_type: pa.DataType, dim: int) -> pa.DataType:
    """A fixed-size list of non-null floats: Parquet then stores no per-value levels (3.5x faster to read)."""
    return pa.list_(pa.field("item", value_type, nullable=False), dim)


def vector_array(rows: np.ndarray) -> pa.FixedSizeListArray:
    """An N×D float matrix as an Arrow column of `vector_type` (no copy of the values)."""
    values = pa.array(np.ascontiguousarray(rows).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(values, type=vector_type(values.type, rows.shape[1]))


def masked(values: np.ndarray, mask: pa.Array | None) -> pa.Array:
    """An Arrow array of `values`, null where `mask` is set."""
    return pa.array(values, mask=mask.to_numpy(zero_copy_only=False) if mask is not None else None)


def feature_dim(model: Any) -> int:
    """Width of the backbone output `features(x)` for one image of the model's input size."""
    c = model.config
    with torch.no_grad():
        p = next(model.parameters(), None)
        x = torch.zeros(1, c.in_channels, c.image_size, c.image_size, device=p.device if p is not None else "cpu")
        return int(model.features(x).shape[1])


def embed_dim(model: Any, source: str) -> int:
    """Width of the stored embedding: the head's penultimate layer, or the backbone output."""
    return int(model.embed_dim) if source == "head" else feature_dim(model)


def head_row_bytes(model: Any) -> int:
    """Bytes one (MC sample, image) row of the head takes at its peak: features copy, dropout, activations.

    A head that folds its dropout masks into the weights (`sample_probs`) holds only logits and
    probabilities per sample, and its input once per row (counted here as if shared by two samples).
    """
    if hasattr(model, "sample_probs"):
        return 4 * (4 * model.config.num_classes + feature_dim(model) // 2)
    return 4 * (3 * feature_dim(model) + 3 * int(getattr(model, "embed_dim", 0)) + 2 * model.config.num_classes)


def mc_chunk_rows(mc_samples: int, row_bytes: int, budget: int = HEAD_BYTES_BUDGET) -> int:
    """Images per MC-head sub-batch so T×rows fits `budget`; refused with the figure when one image is too much."""
    rows = budget // max(1, mc_samples * row_bytes)
    if rows < 1:
        one = mc_samples * row_bytes
        raise DalDistError(f"--mc-samples {mc_samples}: the MC head needs {one / 2**30:.1f} GiB for a single image "
                           f"({mc_samples} samples x {row_bytes} bytes), over the {budget / 2**30:.1f} GiB a batch "
                           f"may allocate; use --mc-samples <= {max(1, budget // row_bytes)}")
    return int(rows)


def check_batch_memory(model: Any, mc_samples: int, batch_size: int,
                       image_shape: tuple[int, int, int] | None) -> int:
    """Refuse a batch whose inputs would not fit the budget (with the figure); returns the MC sub-batch rows."""
    c = model.config
    need = batch_size * c.in_channels * c.image_size * c.image_size * 4
    if image_shape is not None:
        need += batch_size * int(np.prod(image_shape))
    if need > INPUT_BYTES_BUDGET:
        raise DalDistError(f"--batch-size {batch_size}: one batch of {c.in_channels}x{c.image_size}x{c.image_size} "
                           f"model inputs needs {need / 2**30:.1f} GiB, over the {INPUT_BYTES_BUDGET / 2**30:.0f} GiB "
                           "a batch may allocate; lower --batch-size")
    return mc_chunk_rows(mc_samples, head_row_bytes(model))


def check_channels(model: Any, image_shape: tuple[int, int, int] | None, pool: str) -> None:
    """The pool's images must convert to the model's input channels, or every row would be a reject."""
    m = model.config.in_channels
    c = image_shape[2] if image_shape is not None else None
    if c == m or (m in CONVERTIBLE_CHANNELS and (c is None or c in CONVERTIBLE_CHANNELS)):
        return
    have = f"{c}-channel images" if c is not None else "images of unknown channels (encoded or mixed)"
    raise DalDistError(f"pool {pool}: holds {have}; the checkpoint's model {model.config.name!r} expects "
                       f"in_channels={m}, and only 1, 3 and 4 channels convert into each other: score with a "
                       "checkpoint trained on this pool")


def batch_seed(seed: int, ids: np.ndarray) -> int:
    """A dropout seed from (seed, the batch's ids): the same batch draws the same masks on any actor."""
    h = hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=8, key=str(seed).encode())
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def load_checkpoint_bytes(data: bytes, loader: Any) -> Any:
    """A model from checkpoint bytes (what travels through the object store) via a temp file."""
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        tmp.write(data)
        tmp.flush()
        return loader(tmp.name)
