"""Rules: surrogate rule extraction for a tabular model (Karim et al., DSAA 2023): the fidelity-versus-k
curve, the sortable rules table, the surrogate tree, and for a chosen sample its firing rule and
counterfactual checked against the black box. A stored result opens from its link (``/rules?run=<key>``);
everything after computing reads the stored result. Layout only."""
import streamlit as st

import loupe
from views.access import require_access
from views.rules import (METHOD_LABELS, changes_frame, conditions_frame, fidelity_curve_figure, importance_frame,
                         rules_frame, rules_row_height, tree_figure)
from views.st_layout import follow_run_link

require_access()  # every page gates itself: a fresh server may serve a page path without app.py

st.title("Rules")
follow_run_link("rules")
st.caption("A decision-tree surrogate of a tabular black box, trained on the black box's own predictions over its "
           "top-k features. Fidelity says how often the rules agree with the model on held-out rows: rules with "
           "low fidelity explain the surrogate, not the model.")

query = st.query_params.to_dict()
shown = None
if "run" in query:
    try:
        shown = loupe.rules_result(query["run"])
    except loupe.user_errors() + (ValueError,) as err:
        st.error(f"Run not found. {err}")
    else:
        if st.session_state.get("rules-opened") != shown.key:
            meta = shown.artifact.meta
            st.session_state.update({"rules-opened": shown.key, "rules-key": shown.key, "rules-model": meta["model_id"],
                                     "rules-dataset": meta["dataset_id"], "rules-k": int(meta["params"]["k"]),
                                     "rules-leaves": int(meta["params"]["max_leaves"]),
                                     "rules-seed": int(meta["params"]["seed"])})

models = {m["id"]: m for m in loupe.models() if m.get("task") == "tabular" and m.get("status") == "ok"}
datasets = [d["id"] for d in loupe.datasets() if d.get("task") == "tabular" and d.get("status") == "ok"]
if not models or not datasets:
    st.warning("No tabular model or dataset is registered: add one in the manifest (see the README).")
    st.stop()


def _number(name: str, default: int) -> int:
    """An integer URL parameter, or ``default`` when it is missing or not a number."""
    value = query.get(name, "")
    return int(value) if value.isdigit() else default


first = query.get("model") if query.get("model") in models else next(iter(models))
paired = models[first].get("dataset")
defaults = {"rules-model": first,
            "rules-dataset": query.get("dataset") if query.get("dataset") in datasets else
            paired if paired in datasets else datasets[0],
            "rules-k": _number("k", 0), "rules-leaves": min(max(_number("leaves", 16), 2), 256),
            "rules-seed": _number("seed", 0)}
for key, value in defaults.items():
    st.session_state.setdefault(key, value)

top = st.columns([2, 2, 1, 1, 1])
model_id = top[0].selectbox("Model", list(models), key="rules-model")
dataset_id = top[1].selectbox("Dataset", datasets, key="rules-dataset")
k = top[2].number_input("k (0 = auto)", min_value=0, max_value=10_000, key="rules-k",
                        help="features the surrogate may use; 0 picks k from the fidelity-versus-k curve")
leaves = top[3].number_input("max leaves", min_value=2, max_value=256, key="rules-leaves",
                             help="leaf cap of the surrogate tree = number of rules")
seed = top[4].number_input("seed", min_value=0, key="rules-seed")

if st.button("Extract rules", type="primary", key="rules-run"):
    try:
        with st.status(f"Probing {model_id} on {dataset_id} and fitting the surrogate…") as box:
            shown = loupe.rules(model=model_id, dataset=dataset_id, k=int(k) or None, max_leaves=int(leaves),
                                seed=int(seed))
            box.update(label="from the store" if shown.cached else "computed", state="complete")
        st.session_state["rules-key"] = st.session_state["rules-opened"] = shown.key
    except loupe.user_errors() as err:
        st.error(str(err))
if shown is None and "rules-key" in st.session_state:
    shown = loupe.rules_result(st.session_state["rules-key"])

state = {"model": model_id, "dataset": dataset_id, "k": str(k), "leaves": str(leaves), "seed": str(seed)}
if shown is None:
    st.query_params.from_dict(state)
    st.info("Press Extract rules (stored results open instantly).")
    st.stop()

meta, m = shown.artifact.meta, shown.metrics
st.subheader(f"{meta['model_id']} on {meta['dataset_id']}: {m['n_leaves']} rules over the top {shown.k} features")
cols = st.columns(6)
for column, name in zip(cols, ("fidelity", "macro_f1", "accuracy", "proba_r2")):
    info = loupe.metric_info(name)
    column.metric(info.title, info.format(m[name]), help=info.tooltip + (
        f" The model itself: {m['blackbox_accuracy']:.3f}." if name == "accuracy" else ""))
cols[4].metric("k", shown.k, help=f"features the surrogate uses, chosen by "
                                  f"{'you' if shown.info['k_source'] == 'user' else 'the fidelity curve'}")
validity = loupe.metric_info("counterfactual_validity")
cols[5].metric(validity.title, validity.format(m["counterfactual_validity"]), help=validity.tooltip)
st.caption(f"Prescreen: {shown.info['prescreen']}. {shown.info['n_train']} rows fit the surrogate, "
           f"{shown.info['n_val']} choose k, {shown.info['n_test']} are reported. Link: {shown.link}")

st.markdown("**Global rules** (click a column to sort; statistics on held-out rows)")
rules = rules_frame(shown.rules)
stat = {name: loupe.metric_info(name) for name in ("coverage", "precision")}
row_height = rules_row_height(rules)
st.dataframe(rules.assign(**{name: rules[name] * info.column_scale for name, info in stat.items()}),
             hide_index=True, key="rules-table", width="stretch", row_height=row_height,
             height=min(38 + row_height * len(rules), 720),
             column_order=[c for c in rules.columns if c != "length"],  # the CSV has it; the rule shows it
             column_config={
                 "id": st.column_config.TextColumn("id", width=45),
                 "rule": st.column_config.TextColumn("rule", width=330, help="IF conditions THEN class"),
                 "class": st.column_config.TextColumn("class", width=85),
                 **{name: st.column_config.NumberColumn(info.title, format=info.printf, width=80, help=info.tooltip)
                    for name, info in stat.items()},
                 "accuracy": st.column_config.NumberColumn("accuracy ↑", format="%.3f", width=80,
                                                           help="Share of covered rows whose true label is the "
                                                                "rule's class."),
                 "support": st.column_config.NumberColumn("support", width=70, help="held-out rows the rule covers")})
st.download_button("Download rules CSV", rules.to_csv(index=False).encode(), file_name=f"rules-{shown.key[:12]}.csv",
                   mime="text/csv")

left, right = st.columns([1, 2])
with left:
    st.markdown("**Fidelity versus k** (validation rows, which choose k)")
    st.plotly_chart(fidelity_curve_figure(shown.fidelity_curve, shown.k), key="rules-curve",
                    config={"displayModeBar": False})
with right:
    st.markdown("**Top features** (Borda count over the probing methods)")
    features = importance_frame(shown.importance(max(shown.k, 10)))
    st.dataframe(features, hide_index=True, height=300, width="stretch", column_config={
        "rank": st.column_config.NumberColumn("rank", width=45),
        "feature": st.column_config.TextColumn("feature", width=140),
        "mean_rank": st.column_config.NumberColumn("mean rank ↓", format="%.1f", width=80,
                                                   help="Mean of the feature's rank under each probing method "
                                                        "(Borda count); lower is more important."),
        **{method: st.column_config.NumberColumn(METHOD_LABELS.get(method, method), format="%.3g", width=80,
                                                 help=f"importance by {method} (higher is more important)")
           for method in shown.info["methods"]}})

st.markdown("**The surrogate tree** (left branch: the condition holds)")
st.plotly_chart(tree_figure(shown.tree, list(shown.feature_names), shown.classes), key="rules-tree")

st.markdown("**One sample**")
ids = shown.sample_ids
asked = _number("sample", ids[0]) if _number("sample", ids[0]) in ids else ids[0]
sample = st.selectbox("Sample id (held-out)", ids, index=ids.index(asked), key="rules-sample")
local = shown.local(sample)
st.query_params.from_dict({**state, "run": shown.key, "sample": str(sample)})
agree = "agrees" if local["agrees"] else "disagrees"
st.markdown(f"Label **{local['label']}** · model: **{local['blackbox_prediction']}** "
            f"({local['blackbox_confidence']:.2f}) · surrogate: **{local['surrogate_prediction']}** ({agree})")
a, b = st.columns(2)
with a:
    st.markdown(f"Firing rule **{local['rule_id']}**: `{local['rule']}`")
    st.dataframe(conditions_frame(local), hide_index=True,
                 column_config={"value": st.column_config.NumberColumn("value", format="%.4g")})
with b:
    cf = local["counterfactual"]
    if cf is None:
        st.info("Every rule predicts the same class: there is no counterfactual.")
    else:
        verdict = "the model agrees" if cf["blackbox_agrees"] else "the model does not agree"
        st.markdown(f"Counterfactual: reach **{cf['rule_id']}** (class **{cf['class']}**); after the change the model "
                    f"predicts **{cf['blackbox_prediction']}**: {verdict}.")
        (st.success if cf["blackbox_agrees"] else st.warning)(f"`{cf['rule']}`")
        st.dataframe(changes_frame(local), hide_index=True,  # as the rules write thresholds
                     column_config={side: st.column_config.NumberColumn(side, format="%.4g") for side in ("from", "to")})
