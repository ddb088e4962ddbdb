"""shared/store/embeddings.py: a real model from the wheel, offline, normalised, by meaning."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np
import pytest

from shared.errors import CheckpointError
from shared.store import embeddings
from shared.store.embeddings import DIMS, store_index, wordllama_embeddings


def test_vectors_are_256_dims_normalised_and_find_by_meaning() -> None:
    e = wordllama_embeddings()
    docs = e.embed_documents(["Alice drinks green tea every morning",
                              "The VPN needs a hardware token to connect",
                              "Invoices are paid within thirty days"])
    query = np.array(e.embed_query("Which beverage does Alice like?"))
    assert len(query) == DIMS and np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-4)
    scores = np.array(docs) @ query
    assert scores.argmax() == 0  # no shared keyword but "Alice": meaning, not hashing
    assert e.embed_documents([]) == []
    assert wordllama_embeddings().model is e.model  # loaded once a process


def test_store_index_config() -> None:
    index = store_index(["text"])
    assert index["dims"] == DIMS and index["fields"] == ["text"]
    assert len(index["embed"].embed_query("hello")) == DIMS


def test_missing_package_is_one_sentence_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_wordllama(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("wordllama"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    embeddings._model.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_wordllama)
    try:
        with pytest.raises(CheckpointError, match="wordllama package is not installed"):
            wordllama_embeddings()
    finally:
        monkeypatch.undo()
        embeddings._model.cache_clear()


def test_damaged_weights_are_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    from wordllama import WordLlama

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("weights/l2_supercat_256.safetensors")

    embeddings._model.cache_clear()
    monkeypatch.setattr(WordLlama, "load", broken)
    try:
        with pytest.raises(CheckpointError, match="cannot load from the wordllama package"):
            wordllama_embeddings()
    finally:
        monkeypatch.undo()
        embeddings._model.cache_clear()
