"""Streamlit layout of the sanity check (cascading model randomisation): one stored result, and the
section that runs or opens it for a page's current selection (Explain, Compare, the Sanity page).
Layout only: results come from the ``loupe`` API, figures from views/sanity.py."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import streamlit as st

import loupe
from explainers.results.sanity import SanityResult
from views.figures import overlay_card_png
from views.sanity import sanity_figure, stage_table, verdict_line

_CAPTION = ("Adebayo et al. (NeurIPS 2018): the model's layers are re-initialised one at a time from the output "
            "down and the samples re-explained at every stage. A map that stays similar to the trained model's "
            "map after the top half of the layers are random does not explain what the model learned.")


def show(res: SanityResult, key: str) -> None:
    """A stored sanity check: verdict, similarity per layer, the stage table, for images the maps of
    its first sample at every stage, and the permanent link."""
    st.markdown(verdict_line(res))
    st.plotly_chart(sanity_figure(res), key=f"{key}-figure", config={"displayModeBar": False})
    with st.expander("Similarity per stage"):
        st.dataframe(stage_table(res), hide_index=True, width="stretch")
    if res.is_image:
        image = loupe.dataset(res.artifact.meta["dataset_id"]).inputs(res.sample_ids[:1])[0].numpy()
        trained, randomised = res.maps(0)
        st.caption(f"Sample #{res.sample_ids[0]}: |map| of the trained model, then after randomising down to each layer")
        columns = st.columns(min(len(randomised) + 1, 6))
        cards = [("trained", trained), *zip(res.layers, randomised)]
        for i, (name, values) in enumerate(cards[: len(columns)]):
            columns[i].image(overlay_card_png(image, np.abs(values), 0.7, size=160), caption=name)
    st.markdown(f"Permanent link: [{res.link}]({res.link})")


@st.cache_resource(ttl=5, show_spinner=False, max_entries=256)
def _stored(home: str, model_id: str, dataset_id: str, samples: tuple[int, ...] | str, explainer: str, params: str,
            target: str) -> SanityResult | None:
    """The stored check of this selection in the store at ``home`` (``LOUPE_HOME``), or None, looked
    up at most once every 5 s per selection in this server. Each lookup opens the database: about
    30 ms of the server's CPU, on every render of Explain and Compare (py-spy over ``python -m
    bench.load --cases explain``). A check stored by another process shows within 5 s; running it
    here clears this cache, and its Run button finds a check that is already stored without
    computing anything. ``params`` comes as sorted JSON, ``samples`` as a tuple or the text typed."""
    return loupe.sanity(model_id, dataset_id, samples, explainer, json.loads(params), target, compute=False)


def section(model_id: str, dataset_id: str, samples: Sequence[int] | str,
            explainers: Mapping[str, Mapping[str, Any]], target: str, key: str) -> None:
    """Run or open the sanity check of one of ``explainers`` (id -> params) on ``samples``: a stored
    check shows at once; otherwise a button computes it on the worker (then it is stored and linked)."""
    st.subheader("Sanity check: model randomisation")
    st.caption(_CAPTION)
    if not explainers:
        st.info("Choose an attribution explainer first.")
        return
    explainer = st.selectbox("Explainer to check", list(explainers), key=f"{key}-explainer")
    params = dict(explainers[explainer])
    try:
        res = _stored(str(loupe.loupe_home()), model_id, dataset_id,
                      samples if isinstance(samples, str) else tuple(samples), explainer,
                      json.dumps(params, sort_keys=True), target)
    except loupe.user_errors() as err:
        st.error(str(err))
        return
    slot = st.empty()  # the run button, gone once the check is stored
    if res is None and slot.button(f"Run the sanity check of {explainer}", key=f"{key}-run"):
        with st.spinner("Randomising layers and re-explaining on the worker…"):
            try:
                res = loupe.sanity(model_id, dataset_id, samples, explainer, params, target)
            except loupe.user_errors() as err:
                st.error(str(err))
                return
        _stored.clear()  # the next render of this selection finds it stored
        slot.empty()
    if res is None:
        st.caption("No sanity check is stored for this selection yet: running it explains the samples once per layer.")
        return
    show(res, key)
