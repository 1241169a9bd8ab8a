"""The stored result of Bluff activation pathways (``explainers.pathways``) viewed as nodes, edges,
highlights, curves and patches. Every interaction is slicing on the stored condition axis
``[original, target, s_1 … s_E]``: nothing is recomputed, so a share link reopens exactly the
stored result. Apart from the algorithm, so pages, views and the API use the result without
importing the analysis."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from explainers.base import ArtifactView, ParamError

COLUMNS = ("original", "both", "target", "attack")
"""The four node columns, in display order (Bluff: green, orange, blue, red)."""
CRITERIA = ("activated", "excited", "inhibited", "changed")
"""The highlight criteria of spec §2.6."""

_KEYS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "activated": lambda now, benign: now,
    "excited": lambda now, benign: now - benign,
    "inhibited": lambda now, benign: benign - now,
    "changed": lambda now, benign: np.abs(now - benign),
}
"""Ranking key per criterion from the value at the chosen strength and the benign original value (spec §2.6)."""


def _top(key: np.ndarray, members: np.ndarray, pct: float) -> np.ndarray:
    """The top ``max(1, round(n·pct/100))`` of ``members`` by ``key`` (NaN never ranks; spec §6.13)."""
    members = members[np.isfinite(key[members])]
    if len(members) == 0:
        return members
    k = max(1, round(len(members) * pct / 100))
    return members[np.argsort(-key[members], kind="stable")[:k]]


@dataclass(frozen=True)
class Highlight:
    """Which displayed nodes and edges a criterion highlights at one strength."""

    nodes: np.ndarray
    edges: np.ndarray


class PathwaysResult(ArtifactView):
    """A thin typed view of a stored ``pathways`` artifact. Built by :meth:`from_artifact`, so a
    share link (``loupe.artifact(key)``) reopens exactly the stored result."""

    KIND = "pathways"

    @property
    def model_id(self) -> str:
        return self.artifact.meta["model_id"]

    @property
    def dataset_id(self) -> str:
        return self.artifact.meta["dataset_id"]

    @property
    def layers(self) -> list[str]:
        """Displayed layers, lowest first."""
        return list(self.info["layers"])

    @property
    def original(self) -> str:
        return self.info["classes"][self.info["original"]]

    @property
    def target(self) -> str:
        return self.info["classes"][self.info["target"]]

    # -- per strength ------------------------------------------------------------------------------
    @property
    def strengths(self) -> np.ndarray:
        """The attack strength grid (without the benign 0)."""
        return self.artifact.arrays["strengths"]

    @property
    def success_rate(self) -> np.ndarray:
        """Share of attacked images classified as the target, per strength."""
        return self.artifact.arrays["success_rate"]

    @property
    def n_used(self) -> np.ndarray:
        """Images behind each condition: original, target, then the successes at each strength."""
        return self.artifact.arrays["n_used"]

    @property
    def conditions(self) -> list[str]:
        """Labels of the condition axis."""
        return ["original", "target", *[f"{self.info['attack']}@{s:g}" for s in self.strengths]]

    def condition(self, strength: float) -> int:
        """Index on the condition axis of ``strength`` (0: benign original images)."""
        if strength == 0:
            return 0
        hits = np.flatnonzero(np.isclose(self.strengths, strength, rtol=1e-4, atol=1e-7))
        if not len(hits):
            raise ParamError(f"strength {strength:g} is not on the grid {[float(f'{s:g}') for s in self.strengths]} (or 0)")
        return 2 + int(hits[0])

    # -- nodes and edges ---------------------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        return self.artifact.arrays[name]

    @property
    def node_act(self) -> np.ndarray:
        """Median activation of every displayed node ``[conditions, nodes]``."""
        cached = self.__dict__.get("_node_act")
        if cached is None:
            layer, channel = self._array("node_layer"), self._array("node_channel")
            cached = np.zeros((len(self.conditions), len(layer)), np.float32)
            for li in range(len(self.layers)):
                sel = layer == li
                cached[:, sel] = self._array(f"median_{li}")[:, channel[sel]]
            object.__setattr__(self, "_node_act", cached)
        return cached

    def median(self, layer: str) -> np.ndarray:
        """Median activation of every channel of ``layer`` ``[conditions, channels]``."""
        return self._array(f"median_{self.layers.index(layer)}")

    @property
    def nodes(self) -> pd.DataFrame:
        """One row per displayed node: layer, channel, column and its median activation per condition."""
        layer = self._array("node_layer")
        frame = pd.DataFrame({"layer": [self.layers[i] for i in layer], "channel": self._array("node_channel"),
                              "column": [COLUMNS[c] for c in self._array("node_column")]})
        return pd.concat([frame, pd.DataFrame(self.node_act.T, columns=self.conditions)], axis=1)

    @property
    def edges(self) -> pd.DataFrame:
        """One row per edge between displayed nodes of consecutive layers: ends, rule ("weights" or
        "gradient") and its signed median influence per condition."""
        src, dst = self._array("edge_src"), self._array("edge_dst")
        layer, channel = self._array("node_layer"), self._array("node_channel")
        frame = pd.DataFrame({"from_layer": [self.layers[i] for i in layer[src]], "from_channel": channel[src],
                              "to_layer": [self.layers[i] for i in layer[dst]], "to_channel": channel[dst],
                              "rule": [self.info["edge_kinds"][t] for t in self._array("edge_transition")]})
        return pd.concat([frame, pd.DataFrame(self._array("edge_inf").T, columns=self.conditions)], axis=1)

    def highlight(self, criterion: str, strength: float, neurons_pct: float = 20, connections_pct: float = 30
                  ) -> Highlight:
        """Bluff's highlighting (spec §2.6) at ``strength`` (0 = benign): per layer, the top
        ``neurons_pct`` % of displayed nodes by the criterion; then, per layer pair, the top
        ``connections_pct`` % of positive edges whose ends are both highlighted. At strength 0,
        "activated" highlights the original and both columns and the change criteria nothing."""
        if criterion not in _KEYS:
            raise ParamError(f"criterion must be one of {list(_KEYS)}, got {criterion!r}")
        s = self.condition(strength)
        layer, column = self._array("node_layer"), self._array("node_column")
        nodes = np.zeros(len(layer), bool)
        if s == 0:
            nodes[:] = (column <= COLUMNS.index("both")) if criterion == "activated" else False
        else:
            key = _KEYS[criterion](self.node_act[s], self.node_act[0])
            for li in range(len(self.layers)):
                nodes[_top(key, np.flatnonzero(layer == li), neurons_pct)] = True
        inf_s, inf_0 = self._array("edge_inf")[s], self._array("edge_inf")[0]
        ends = nodes[self._array("edge_src")] & nodes[self._array("edge_dst")] & (inf_s > 0)
        key = _KEYS[criterion](inf_s, inf_0)
        edges = np.zeros(len(inf_s), bool)
        transition = self._array("edge_transition")
        for t in range(len(self.layers) - 1):
            edges[_top(key, np.flatnonzero(ends & (transition == t)), connections_pct)] = True
        return Highlight(nodes, edges)

    def compare(self, criterion: str, weak: float, strong: float, neurons_pct: float = 20) -> np.ndarray:
        """Per displayed node: 0 highlighted at neither strength, 1 at the weaker only, 2 at the
        stronger only, 3 at both (Bluff's compare mode)."""
        return (self.highlight(criterion, weak, neurons_pct).nodes.astype(np.int8)
                + 2 * self.highlight(criterion, strong, neurons_pct).nodes.astype(np.int8))

    def node_index(self, layer: str, channel: int) -> int:
        """Position of a displayed node."""
        hits = np.flatnonzero((self._array("node_layer") == self.layers.index(layer))
                              & (self._array("node_channel") == channel))
        if not len(hits):
            raise ParamError(f"channel {channel} of {layer} is not a displayed node")
        return int(hits[0])

    def curve(self, layer: str, channel: int) -> pd.DataFrame:
        """Median activation of one channel against strength (0 = benign original), with the images
        behind each point; the benign target median is the last row's reference in ``target``."""
        med = self.median(layer)[:, channel]
        return pd.DataFrame({"strength": [0.0, *self.strengths.tolist()], "median": [med[0], *med[2:]],
                             "images": [self.n_used[0], *self.n_used[2:]], "target": med[1]})

    def patches(self, node: int) -> list[tuple[int, tuple[int, ...]]]:
        """The top-activating dataset patches of a displayed node: (sample id, (y0, x0, y1, x1))."""
        ids, boxes = self._array("patch_ids")[node], self._array("patch_boxes")[node]
        return [(int(i), tuple(int(v) for v in b)) for i, b in zip(ids, boxes) if i >= 0]
