"""A backbone loaded only when its weights are needed; its fingerprint, when it can be, from files.

Why: ``prepare`` (run by every ``gym.make`` and ``exitgym train`` of a cached env) only needs the
backbone's fingerprint to find caches that already exist, and loading MiniLM to compute it took
~5 s, twice per ``train``. A fingerprint computed once is remembered under the hash of the files
the model is loaded from (:func:`~exitgym.backbones.fingerprint.files_key`: the model directory,
plus the fine-tuned weights of a prepared recipe), so a later process hashes those files instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exitgym.backbones.fingerprint import files_key, remember_fingerprint, remembered_fingerprint


class LazyBackbone:
    """The backbone ``name`` (with fine-tuned weights once :meth:`use_weights` is called), moved
    to ``device`` (a :func:`~exitgym.utils.devices.resolve_device` spec) when loaded."""

    def __init__(self, name: str, device: str = "auto") -> None:
        self.name = name
        self.device = device
        self.weights: Path | None = None
        self._backbone: Any = None

    def use_weights(self, path: Path, load: bool = True) -> None:
        """Load the fine-tuned ``path`` over the backbone's own weights (now or when loaded;
        ``load=False``: the loaded model already holds them, it was just saved to ``path``)."""
        self.weights = Path(path)
        if self._backbone is not None and load:
            self._load_weights(self._backbone)

    @property
    def loaded(self) -> bool:
        return self._backbone is not None

    def get(self) -> Any:
        """The loaded :class:`~exitgym.backbones.base.Backbone` (loaded on first call)."""
        if self._backbone is None:
            from exitgym.backbones.registry import load_backbone
            from exitgym.utils.devices import resolve_device

            backbone = load_backbone(self.name)
            if self.weights is not None:
                self._load_weights(backbone)
            backbone.model.to(resolve_device(self.device))
            self._backbone = backbone
            self.remember()
        return self._backbone

    def fingerprint(self) -> str:
        """The loaded model's fingerprint; remembered from an earlier load of the same files
        when there is one, so the weights are not loaded for it."""
        if self._backbone is None:
            key = self._key()
            known = remembered_fingerprint(key) if key is not None else None
            if known is not None:
                return known
        return self.get().fingerprint()

    def remember(self) -> None:
        """Store the loaded model's fingerprint under its files' key (after fine-tuning saved
        the weights :meth:`use_weights` names, too)."""
        key = self._key()
        if key is not None and self._backbone is not None:
            remember_fingerprint(key, self._backbone.fingerprint())

    def _key(self) -> str | None:
        from exitgym.backbones.registry import backbone_files

        files = backbone_files(self.name)
        if files is None or (self.weights is not None and not self.weights.is_file()):
            return None
        extra = [self.weights] if self.weights is not None else []
        return files_key([*files, *extra], "fine-tuned" if extra else "backbone")

    def _load_weights(self, backbone: Any) -> None:
        from exitgym.backbones.heads import load_backbone_weights

        assert self.weights is not None
        load_backbone_weights(backbone.model, self.weights)
        backbone.invalidate_fingerprint()
