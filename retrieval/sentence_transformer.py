"""Any sentence-transformers model, from a folder or the local Hugging Face cache; never downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import ConfigError

INSTALL_HINT = "pip install sentence-transformers"
NO_DOWNLOAD = (
    "nothing is downloaded at run time: give the model's folder as RECASSIST_EMBEDDING_MODEL, or download it once "
    "where there is network (`SentenceTransformer(NAME).save(FOLDER)`, or `hf download NAME` into the cache)"
)


class SentenceTransformerEmbedder:
    """A sentence-transformers model named by a folder path or a model id in the local HF cache."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 64):
        if not model:
            raise ConfigError(
                "RECASSIST_EMBEDDING_BACKEND=st needs RECASSIST_EMBEDDING_MODEL: the folder of a "
                "sentence-transformers model, or the name of one in the local Hugging Face cache"
            )
        folder = Path(model).expanduser()
        self.is_folder = folder.is_dir()
        if not self.is_folder and (model.startswith((".", "/", "~")) or folder.exists()):
            raise ConfigError(f"RECASSIST_EMBEDDING_MODEL={model!r} is no folder; give the folder that holds the model's files")
        # A folder is known by its absolute path: two folders are two models, each with its own collection.
        self.source = str(folder.resolve()) if self.is_folder else model
        self.name = self.source
        self.device = device
        self.batch_size = batch_size
        self._model = None  # loaded on first use: commands that never embed stay fast

    @property
    def dim(self) -> int:
        model = self.model
        size = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # renamed in 6.x
        return int(size())

    @property
    def model(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigError(f"the {self.name} embedding model needs `{INSTALL_HINT}` ({exc})") from None
            hf_logging.disable_progress_bar()
            try:
                self._model = SentenceTransformer(self.source, device=self.device, local_files_only=True)
            except OSError as exc:
                if self.is_folder:
                    raise ConfigError(f"cannot load the sentence-transformers model in {self.source}: {exc}") from None
                raise ConfigError(
                    f"the sentence-transformers model {self.source!r} is not in the local Hugging Face cache; {NO_DOWNLOAD}"
                ) from None
            except ValueError as exc:  # a folder without a model's config
                raise ConfigError(
                    f"{self.source} does not hold a sentence-transformers or transformers model ({exc}); "
                    "give the folder with its config.json and weights"
                ) from None
        return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32)
