"""What an index's vectors mean (`IndexMeta`, its `meta` table) and every rule about which
requests an index can serve. `Meta` is the one reader of that table for a session: it reads
it again whenever another connection has committed (SQLite's `data_version`), so a
long-lived session (serve, mcp, watch) follows another process's re-dim."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import IndexEmpty, IndexMismatch, JinalocError
from .store import Store

TASK = "retrieval"
# Index dim when none is given (clamped to the model's width); see README "Defaults".
DEFAULT_DIM = 512
DEFAULT_CHUNK_TOKENS = 512
# Layout of embed_text(); a new layout needs a re-index.
CHUNK_FORMAT = "1"


@dataclass(frozen=True)
class IndexMeta:
    """What the vectors of an index mean; stored as text in its `meta` table."""

    model: str  # registry name of the model
    model_ref: str  # how to load it again: a name, or a folder's absolute path
    backend: str
    quant: str
    dim: int
    chunk_tokens: int
    # Dims of the vectors chunks keep (the model's whole vector; before schema 5: `dim`).
    full_dim: int = 0
    task: str = TASK
    prompt: str = "document"
    bit_order: str = "lsb-first"  # vectors.pack_bits, as sqlite-vec packs bit[N]
    chunk_format: str = CHUNK_FORMAT
    created_by: str = ""

    @classmethod
    def from_store(cls, values: dict[str, str]) -> IndexMeta | None:
        if not values.get("model"):
            return None
        types = {f.name: f.type for f in fields(cls)}
        return cls(
            **{k: int(v) if types[k] == "int" else v for k, v in values.items() if k in types}
        )

    def to_store(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @property
    def kept_dim(self) -> int:
        return self.full_dim or self.dim


def model_ref(model: str | None) -> str | None:
    """How to load the model again later: a folder as an absolute path, a name as is."""
    if model and Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    return model


class Meta:
    """One session's view of its index's meta, and the rules that follow from it."""

    def __init__(self, store: Store):
        self.store = store
        self._value: IndexMeta | None = None
        self._seen = None  # the file's state (`Store.state`) when the meta was read

    @property
    def value(self) -> IndexMeta | None:
        """The meta (None: nothing indexed yet), read again when the file has changed since
        it was last read (by this connection or another)."""
        seen = self.store.state()
        if seen != self._seen:
            self._value, self._seen = IndexMeta.from_store(self.store.meta()), seen
        return self._value

    def write(self, meta: IndexMeta) -> None:
        """Record the meta of a new index."""
        self.store.set_meta(meta.to_store())

    def built(self) -> IndexMeta:
        if self.value is None:
            raise IndexEmpty(self.store.path)
        return self.value

    def check(
        self, model: str | None = None, dim: int | None = None, chunk_tokens: int | None = None
    ) -> None:
        """Refuse another model, dim or chunking than the index was built with (another
        backend or quant is fine: the vectors agree across them)."""
        m = self.value
        if m is None:
            return
        if m.chunk_format != CHUNK_FORMAT:
            raise IndexMismatch(self.store.path, "chunk_format", m.chunk_format, CHUNK_FORMAT)
        if model is not None:
            from ..registry import resolve

            self.check_model(resolve(model).name)
        if dim is not None and dim != m.dim:
            raise IndexMismatch(self.store.path, "dim", m.dim, dim)
        if chunk_tokens and chunk_tokens != m.chunk_tokens:
            raise IndexMismatch(self.store.path, "chunk_tokens", m.chunk_tokens, chunk_tokens)

    def check_model(self, name: str) -> None:
        """Refuse a model other than the index's own (by registry name)."""
        m = self.value
        if m and name != m.model:
            raise IndexMismatch(self.store.path, "model", m.model, name, m.model_ref)

    def check_redim(self, dim: int) -> None:
        """Refuse a dim the kept vectors cannot give, or one the model was not trained for."""
        from ..registry import load_registry
        from ..vectors import check_dim

        m = self.built()
        if dim > m.kept_dim:
            raise JinalocError(
                f"{self.store.path} keeps {m.kept_dim}-dim vectors, so it cannot give dim {dim}",
                f"re-index it at dim {dim} (the model may give more)",
            )
        spec = load_registry().models.get(m.model)
        check_dim(dim, m.kept_dim, spec.allowed_dims() if spec else None)
