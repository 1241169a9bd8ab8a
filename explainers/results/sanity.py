"""The typed view of a stored sanity-check artifact (``explainers.sanity``): what pages, the API and
the export read, straight from the artifact's arrays and ``info`` (nothing is recomputed)."""
from __future__ import annotations

from typing import Any

import numpy as np

from explainers.base import ArtifactView


class SanityResult(ArtifactView):
    """Per cascade stage s (output side first) and sample b: ``spearman[s, b]`` of |map| with the
    trained model's |map|, ``ssim[s, b]`` (images), their medians, the maps, and the verdict."""

    KIND = "sanity"

    @property
    def explainer(self) -> str:
        return str(self.info["explainer"])

    @property
    def explainer_params(self) -> dict[str, Any]:
        return dict(self.info["explainer_params"])

    @property
    def layers(self) -> list[str]:
        """Stage labels: stage s has randomised ``layers[:s + 1]``."""
        return list(self.info["layers"])

    @property
    def sample_ids(self) -> list[int]:
        return [int(i) for i in self.artifact.meta["sample_ids"]]

    @property
    def is_image(self) -> bool:
        """Whether the maps are images (B×H×W), so SSIM and map strips exist."""
        return self.artifact.arrays["trained_maps"].ndim == 3

    @property
    def spearman(self) -> np.ndarray:
        return self.artifact.arrays["spearman"]

    @property
    def ssim(self) -> np.ndarray | None:
        return self.artifact.arrays.get("ssim")

    @property
    def verdict(self) -> str:
        """"pass", "fail" or "inconclusive"."""
        return str(self.info["verdict"])

    @property
    def verdict_text(self) -> str:
        return str(self.info["verdict_text"])

    @property
    def judged_stage(self) -> int:
        """Index of the stage the verdict reads (the top ⌈S/2⌉ layers randomised)."""
        return int(self.info["judged_after"]) - 1

    @property
    def threshold(self) -> float:
        return float(self.info["threshold"])

    def medians(self) -> dict[str, np.ndarray]:
        """Per stage, the median over samples of each similarity (NaN-safe)."""
        out = {"spearman": self.artifact.arrays["spearman_median"]}
        if self.ssim is not None:
            with np.errstate(all="ignore"):
                out["ssim"] = np.array([np.nanmedian(s) if np.isfinite(s).any() else np.nan for s in self.ssim])
        return out

    def maps(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i``'s trained-model map and its S randomised-model maps (float32)."""
        arrays = self.artifact.arrays
        return arrays["trained_maps"][i].astype(np.float32), arrays["randomized_maps"][:, i].astype(np.float32)

    def sample_rows(self) -> list[dict[str, Any]]:
        """One row per sample: the run-level verdict, its Spearman at the judged stage and with every
        layer random, and (images) its SSIM at the judged stage: the columns the export adds."""
        note = self.info["annotates"]
        return [{"sample_id": int(sid), **dict(zip(note["columns"], entry["values"]))}
                for sid, entry in note["samples"].items()]
