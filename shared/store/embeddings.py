"""A real embedding model that works offline: WordLlama's 256-dimension weights, from its wheel.

    index = {"dims": DIMS, "embed": wordllama_embeddings(), "fields": ["text"]}
    store = PostgresStore(conn, index=index)          # or SqliteStore(conn, index=index)

``wordllama`` ships its default model (``l2_supercat``, ~16 MB of token embeddings averaged
into a 256-dimension sentence vector) inside the wheel, so nothing is downloaded and the
tests run without a network. Vectors are L2-normalised: cosine similarity is a dot product.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from shared.errors import CheckpointError

DIMS = 256
_LOCK = threading.Lock()  # one load, even when two threads ask first at once


class WordLlamaEmbeddings(Embeddings):
    """LangChain's ``Embeddings`` over a loaded WordLlama model (what LangGraph's stores take)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.model.embed(list(texts), norm=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@lru_cache(maxsize=1)
def _model() -> Any:
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        raise CheckpointError("The embedding model cannot load: the wordllama package is not "
                              "installed (run make setup, or pip install wordllama).") from None
    # WordLlama.load's default offline lookup searches a user cache folder, not the wheel's
    # own weights: point cache_dir at the package folder, where weights/ and tokenizers/ are.
    package = Path(wordllama.__file__).parent
    try:
        return WordLlama.load(dim=DIMS, cache_dir=package, disable_download=True)
    except Exception as exc:  # missing or damaged weights: say which package and why
        raise CheckpointError(f"The embedding model cannot load from the wordllama package "
                              f"({package}): {type(exc).__name__}: {exc}. Reinstall it with "
                              "pip install --force-reinstall wordllama.") from None


def wordllama_embeddings() -> WordLlamaEmbeddings:
    """The shared model (loaded once a process, ~1 s), as LangChain ``Embeddings``."""
    with _LOCK:
        return WordLlamaEmbeddings(_model())


def store_index(fields: list[str] | None = None) -> dict[str, Any]:
    """The ``index=`` config for LangGraph's stores: this model, its dims, the fields embedded."""
    return {"dims": DIMS, "embed": wordllama_embeddings(), "fields": fields or ["$"]}


__all__ = ["DIMS", "WordLlamaEmbeddings", "store_index", "wordllama_embeddings"]
