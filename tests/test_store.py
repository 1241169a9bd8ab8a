"""store/: keys, round trips, idempotence, key validation, migrations, links and export."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from store import db, schema
from store.export import export, top_k
from store.files import StoreError
from store.keys import InvalidKey, RunNotFound, canonical_json, check_key, is_valid_key, item_key, run_key
from store.links import parse_run_param, run_link
from store.runs import ItemRecord, Store

META = {
    "model_id": "shapes_cnn",
    "weights_hash": "w" * 64,
    "dataset_id": "shapes",
    "explainer_id": "saliency",
    "explainer_version": "1",
    "params": {"abs": True, "n": 3},
}
ITEM_FIELDS = {**META, "sample_id": 4, "sample_hash": "s" * 64, "target": "predicted"}
RUN_FIELDS = {**META, "sample_ids": [4, 1], "content_hash": "c" * 64, "target": "predicted"}
BAD_KEYS = ["' OR 1=1 --", "../../etc", "", "a" * 65, "a" * 63, "A" * 64, "a" * 63 + "\n", "g" * 64]


def _items(meta: dict, sample_ids: list[int], shape: tuple[int, ...] = (3, 4), seed: int = 0) -> list[ItemRecord]:
    """Deterministic random items (maps, curves, metrics) for ``sample_ids``."""
    rng = np.random.default_rng(seed)
    fields = {k: v for k, v in meta.items() if k in ITEM_FIELDS}
    return [
        ItemRecord(
            item_key=item_key(**fields, sample_id=sid, sample_hash=f"h{sid}", target=meta.get("target", "predicted")),
            sample_id=sid, label=sid % 3, target=1, prediction=1 + sid % 2, confidence=0.25 + sid / 100,
            metrics={"deletion_auc": float(rng.random()), "pointing_hit": bool(sid % 2), "spearman": float("nan")},
            extras={"steps": np.int64(7), "layer": "conv2"},
            map=rng.standard_normal(shape).astype(np.float32),
            arrays={"deletion_curve": rng.random(9), "steps": np.arange(3)},
            seconds=0.5,
        )
        for sid in sample_ids
    ]


def _put(store: Store, meta: dict, sample_ids: list[int], **kw) -> tuple[str, list[ItemRecord]]:
    """Store items and their run; return the run key and the items written."""
    items = _items(meta, sample_ids, **kw)
    store.put_items(meta, items)
    run_meta = {**meta, "sample_ids": sample_ids, "content_hash": f"c{sample_ids}", "target": "predicted"}
    return store.put_run(run_meta, [i.item_key for i in items]), items


def _count(store: Store, table: str) -> int:
    con = duckdb.connect(str(store.path))
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "loupe.duckdb")


# -- keys --------------------------------------------------------------------------------------
def test_run_key_is_sha256_of_the_documented_canonical_json():
    text = (
        '{"content_hash":"' + "c" * 64 + '","dataset_id":"shapes","explainer_id":"saliency","explainer_version":"1",'
        '"model_id":"shapes_cnn","params":{"abs":true,"n":3},"sample_ids":[4,1],"target":"predicted",'
        '"weights_hash":"' + "w" * 64 + '"}'
    )
    assert run_key(**RUN_FIELDS) == hashlib.sha256(text.encode()).hexdigest()
    assert is_valid_key(run_key(**RUN_FIELDS)) and is_valid_key(item_key(**ITEM_FIELDS))


@pytest.mark.parametrize(
    "name, value",
    [("model_id", "other"), ("weights_hash", "x"), ("dataset_id", "digits"), ("explainer_id", "gradcam"),
     ("explainer_version", "2"), ("params", {"abs": False, "n": 3}), ("target", "label"), ("target", 2),
     ("sample_id", 5), ("sample_hash", "t")],
)
def test_item_key_changes_with_every_input(name, value):
    assert item_key(**{**ITEM_FIELDS, name: value}) != item_key(**ITEM_FIELDS)


@pytest.mark.parametrize(
    "name, value",
    [("model_id", "other"), ("weights_hash", "x"), ("dataset_id", "digits"), ("explainer_id", "gradcam"),
     ("explainer_version", "2"), ("params", {"abs": True, "n": 4}), ("target", 0),
     ("sample_ids", [1, 4]), ("sample_ids", [4]), ("content_hash", "d")],
)
def test_run_key_changes_with_every_input(name, value):
    assert run_key(**{**RUN_FIELDS, name: value}) != run_key(**RUN_FIELDS)


def test_keys_ignore_params_order_and_numpy_int_types():
    assert run_key(**{**RUN_FIELDS, "params": {"n": 3, "abs": True}}) == run_key(**RUN_FIELDS)
    assert run_key(**{**RUN_FIELDS, "sample_ids": np.array([4, 1])}) == run_key(**RUN_FIELDS)
    assert item_key(**{**ITEM_FIELDS, "sample_id": np.int64(4)}) == item_key(**ITEM_FIELDS)


def test_keys_refuse_nan_params_and_bad_targets():
    with pytest.raises(ValueError):
        run_key(**{**RUN_FIELDS, "params": {"sigma": float("nan")}})
    for target in (True, -1, "best", 1.5):
        with pytest.raises(ValueError, match="target"):
            run_key(**{**RUN_FIELDS, "target": target})


@pytest.mark.parametrize("bad", [*BAD_KEYS, None, 123])
def test_is_valid_key_rejects_malformed(bad):
    assert not is_valid_key(bad)
    with pytest.raises(InvalidKey, match="is not a run key: keys are 64 hexadecimal characters"):
        check_key(bad)


# -- round trip --------------------------------------------------------------------------------
def test_constructor_touches_nothing(tmp_path: Path):
    Store(tmp_path / "new" / "loupe.duckdb")
    assert not (tmp_path / "new").exists()


def test_put_get_round_trip_is_exact(store: Store):
    meta = {**META, "device": "cpu"}
    items = _items(meta, [5, 2, 9])
    store.put_items(meta, items)
    key = store.put_run(
        {**meta, "sample_ids": [5, 2, 9], "content_hash": "c", "target": 3, "seconds": 1.5,
         "versions": {"torch": "2.13.0"}},
        [i.item_key for i in items],
    )
    run = store.get_run(key)
    assert run.key == key
    assert run.meta["sample_ids"] == [5, 2, 9] and run.meta["target"] == 3 and run.meta["n_samples"] == 3
    assert run.meta["params"] == META["params"] and run.meta["versions"] == {"torch": "2.13.0"}
    assert run.meta["seconds"] == 1.5 and run.meta["device"] == "cpu" and run.meta["status"] == "done"
    assert [i.sample_id for i in run.items] == [5, 2, 9]
    for got, want in zip(run.items, items):
        assert got.map.dtype == want.map.dtype and got.map.tobytes() == want.map.tobytes()
        assert got.map.shape == want.map.shape
        assert json.dumps(dict(got.metrics)) == json.dumps(dict(want.metrics))  # NaN included
        assert dict(got.extras) == {"steps": 7, "layer": "conv2"}
        assert set(got.arrays) == {"deletion_curve", "steps"}
        for name, array in want.arrays.items():
            assert np.array_equal(got.arrays[name], array) and got.arrays[name].dtype == array.dtype
        assert (got.label, got.target, got.prediction, got.confidence, got.seconds) == (
            want.label, want.target, want.prediction, want.confidence, want.seconds)


def test_stored_records_are_read_only(store: Store):
    key, _ = _put(store, META, [0, 1])
    run = store.get_run(key)
    with pytest.raises(ValueError):
        run.items[0].map[0, 0] = 1.0
    with pytest.raises(TypeError):
        run.items[0].metrics["deletion_auc"] = 2.0  # type: ignore[index]
    run.meta["params"]["abs"] = False
    assert store.get_run(key).meta["params"] == META["params"]


def test_repeated_reads_are_served_without_opening_the_database(store: Store, monkeypatch: pytest.MonkeyPatch):
    key, items = _put(store, META, [0, 1])
    first = store.get_run(key)

    def refuse(*args, **kwargs):
        raise AssertionError("the database was opened")

    monkeypatch.setattr(db, "connection", refuse)
    again = Store(store.path).get_run(key)  # another Store on the same file shares the memo
    assert [i.map.tobytes() for i in again.items] == [i.map.tobytes() for i in first.items]
    assert set(store.lookup([i.item_key for i in items])) == {i.item_key for i in items}
    with pytest.raises(AssertionError, match="opened"):
        store.get_run("0" * 64)


def test_duplicate_puts_are_no_ops(store: Store):
    key, items = _put(store, META, [0, 1, 2])
    map_file = store.root / "maps" / items[0].item_key[:2] / f"{items[0].item_key}.npy"
    written = map_file.stat().st_mtime_ns
    store.put_items(META, items + items[:1])
    again = store.put_run({**META, "sample_ids": [0, 1, 2], "content_hash": "c[0, 1, 2]", "target": "predicted"},
                          [i.item_key for i in items])
    assert again == key
    assert (_count(store, "items"), _count(store, "runs"), _count(store, "run_items")) == (3, 1, 3)
    assert map_file.stat().st_mtime_ns == written


def test_lookup_returns_the_stored_subset(store: Store):
    _, items = _put(store, META, [0, 1, 2])
    unknown = "0" * 64
    found = store.lookup([items[0].item_key, items[2].item_key, unknown])
    assert set(found) == {items[0].item_key, items[2].item_key}
    assert found[items[2].item_key].sample_id == 2
    assert store.lookup([]) == {}


def test_put_run_refuses_missing_items_and_wrong_key(store: Store):
    items = _items(META, [0, 1])
    store.put_items(META, items[:1])
    run_meta = {**META, "sample_ids": [0, 1], "content_hash": "c", "target": "predicted"}
    with pytest.raises(ValueError, match="not stored"):
        store.put_run(run_meta, [i.item_key for i in items])
    with pytest.raises(ValueError, match="does not match"):
        store.put_run({**run_meta, "key": "0" * 64}, [items[0].item_key] * 2)
    with pytest.raises(ValueError, match="2 sample ids but 1 item keys"):
        store.put_run(run_meta, [items[0].item_key])
    assert _count(store, "runs") == 0 and _count(store, "run_items") == 0


def test_bad_metadata_and_values_are_named(store: Store):
    with pytest.raises(ValueError, match=r"missing fields \['params'\].*unknown fields \['modle'\]"):
        store.put_items({**{k: v for k, v in META.items() if k != "params"}, "modle": "x"}, [])
    item = _items(META, [0])[0]
    bad_extras = ItemRecord(item.item_key, 0, extras={"curve": np.zeros(3)})
    with pytest.raises(ValueError, match=r"extras\['curve'\] is a ndarray"):
        store.put_items(META, [bad_extras])
    with pytest.raises(ValueError, match=r"metrics\['name'\] is a str"):
        store.put_items(META, [ItemRecord(item.item_key, 0, metrics={"name": "x"})])
    with pytest.raises(ValueError, match=r"sample_id must be an integer, got None"):
        store.put_items(META, [ItemRecord(item.item_key, None)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"label must be an integer, got 1.5"):
        store.put_items(META, [ItemRecord(item.item_key, 0, label=1.5)])  # type: ignore[arg-type]
    with pytest.raises(InvalidKey, match="is not an item key"):
        store.put_items(META, [ItemRecord("nope", 0)])


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_malformed_keys_raise_invalid_key_and_touch_nothing(store: Store, bad: str):
    key, items = _put(store, META, [0])
    with pytest.raises(InvalidKey, match="keys are 64 hexadecimal characters"):
        store.get_run(bad)
    with pytest.raises(InvalidKey):
        store.lookup([items[0].item_key, bad])
    with pytest.raises(InvalidKey):
        export(store, bad)
    assert store.get_run(key).key == key and _count(store, "runs") == 1


def test_unknown_key_raises_run_not_found(store: Store):
    _put(store, META, [0])
    with pytest.raises(RunNotFound, match="no stored run with key " + "f" * 64):
        store.get_run("f" * 64)
    with pytest.raises(RunNotFound, match="no stored run with key"):
        export(store, "f" * 64)


def test_missing_map_file_is_reported(store: Store):
    key, items = _put(store, META, [0])
    (store.root / "maps" / items[0].item_key[:2] / f"{items[0].item_key}.npy").unlink()
    with pytest.raises(StoreError, match="map file of stored item"):
        store.get_run(key)


def test_list_runs_filters_and_orders_newest_first(store: Store):
    a, _ = _put(store, META, [0])
    b, _ = _put(store, {**META, "explainer_id": "gradcam"}, [0])
    c, _ = _put(store, {**META, "model_id": "shapes_resnet"}, [0, 1])
    assert [r["key"] for r in store.list_runs()] == [c, b, a]
    assert [r["key"] for r in store.list_runs(model="shapes_cnn")] == [b, a]
    assert [r["key"] for r in store.list_runs(explainer="gradcam")] == [b]
    assert [r["key"] for r in store.list_runs(model="shapes_cnn", explainer="saliency")] == [a]
    assert store.list_runs(dataset="digits") == [] and len(store.list_runs(limit=2)) == 2
    assert store.list_runs(model="' OR 1=1 --") == []


# -- migrations --------------------------------------------------------------------------------
_N = len(schema.MIGRATIONS)
_NEXT = schema.Migration(_N + 1, "a later kind", ("CREATE TABLE later (run_key VARCHAR, rule VARCHAR)",))


def _version_rows(path: Path) -> list[int]:
    con = duckdb.connect(str(path))
    try:
        return [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    finally:
        con.close()


def test_a_version_1_file_is_migrated_in_place(store: Store, monkeypatch: pytest.MonkeyPatch):
    current = schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", current[:1])
    key, items = _put(store, META, [0, 1])
    assert _version_rows(store.path) == [1]
    monkeypatch.setattr(schema, "MIGRATIONS", (*current, _NEXT))
    assert [r["key"] for r in Store(store.path).list_runs()] == [key]
    Store(store.path).list_runs()  # a second open applies nothing twice
    assert _version_rows(store.path) == list(range(1, _N + 2))
    con = duckdb.connect(str(store.path))
    try:
        assert con.execute("SELECT count(*) FROM later").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM artifacts").fetchone() == (0,)  # v2 arrived too
    finally:
        con.close()
    assert Store(store.path).lookup([items[1].item_key])[items[1].item_key].sample_id == 1


def test_a_newer_file_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch):
    current = schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", (*current, _NEXT))
    store.list_runs()
    monkeypatch.setattr(schema, "MIGRATIONS", current)
    with pytest.raises(schema.SchemaError, match=f"schema version {_N + 1}.*written by a newer Loupe"):
        store.list_runs()


def test_migrations_must_be_numbered_in_order(store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(schema, "MIGRATIONS", (_NEXT,))
    with pytest.raises(schema.SchemaError, match=rf"numbered 1..n in order, got \[{_N + 1}\]"):
        store.list_runs()


# -- links -------------------------------------------------------------------------------------
def test_run_link_uses_base_url(monkeypatch: pytest.MonkeyPatch):
    key = "ab" * 32
    monkeypatch.delenv("LOUPE_BASE_URL", raising=False)
    assert run_link(key) == f"http://localhost:8501/explain?run={key}"
    monkeypatch.setenv("LOUPE_BASE_URL", "https://loupe.example.org/lab/")
    assert run_link(key, view="compare") == f"https://loupe.example.org/lab/explain?run={key}&view=compare"
    assert run_link(key, view="a b&c") == f"https://loupe.example.org/lab/explain?run={key}&view=a+b%26c"
    assert run_link(key, kind="rules") == f"https://loupe.example.org/lab/rules?run={key}"
    assert run_link(key, kind="a kind no page shows") == f"https://loupe.example.org/lab/?run={key}"  # home says so
    with pytest.raises(InvalidKey):
        run_link("../../etc")


def test_parse_run_param_validates():
    key = "ab" * 32
    assert parse_run_param(f"  {key.upper()} ") == key
    for bad in [*BAD_KEYS[:3], None, ["x"]]:
        with pytest.raises(InvalidKey, match="is not a run key"):
            parse_run_param(bad)


# -- export ------------------------------------------------------------------------------------
def test_top_k_ranks_by_value_then_lower_index_with_nan_last():
    values = np.array([[1.0, 5.0, 5.0, np.nan, 3.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    index, top = top_k(values, 4)
    assert index.tolist() == [[1, 2, 5, 4], [0, 1, 2, 3]]
    assert top.tolist() == [[5.0, 5.0, 5.0, 3.0], [0.0] * 4]
    index, top = top_k(np.array([[np.nan, 2.0]]), 5)
    assert index.tolist() == [[1, 0]] and top[0, 0] == 2.0 and np.isnan(top[0, 1])


def _hand_run(store: Store) -> tuple[str, str]:
    """One image run (a 2×3 map with a tie) and one tabular run (4 features)."""
    image = ItemRecord(
        item_key=item_key(**ITEM_FIELDS), sample_id=4, label=2, target=1, prediction=1, confidence=0.75,
        metrics={"deletion_auc": 0.125, "label": 9.0},
        map=np.array([[0.5, -2.0, 3.0], [3.0, 0.0, 1.0]], dtype=np.float32),
    )
    store.put_items(META, [image])
    image_run = store.put_run({**META, "sample_ids": [4], "content_hash": "c", "target": "predicted"},
                              [image.item_key])
    tab_meta = {**META, "model_id": "bc_mlp", "dataset_id": "breast_cancer"}
    table = ItemRecord(
        item_key=item_key(**{**ITEM_FIELDS, **tab_meta}), sample_id=7, label=0, target=0, prediction=0,
        confidence=0.5, metrics={"insertion_auc": 0.5}, map=np.array([0.1, -0.3, 0.7, 0.2], dtype=np.float32),
    )
    store.put_items(tab_meta, [table])
    tab_run = store.put_run({**tab_meta, "sample_ids": [7], "content_hash": "c", "target": "predicted"},
                            [table.item_key])
    return image_run, tab_run


def test_export_columns_and_top_k_on_a_hand_built_map(store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LOUPE_BASE_URL", "http://host:1")
    image_run, _ = _hand_run(store)
    frame = export(store, image_run, k=3)
    assert list(frame.columns) == [
        "run_key", "link", "model", "dataset", "sample_id", "label", "label_name", "target", "target_name",
        "prediction", "prediction_name", "confidence", "explainer", "params", "deletion_auc", "metric_label",
        "top1_index", "top1_row", "top1_col", "top1_value", "top2_index", "top2_row", "top2_col", "top2_value",
        "top3_index", "top3_row", "top3_col", "top3_value",
    ]
    row = frame.iloc[0]
    assert row["link"] == f"http://host:1/explain?run={image_run}" and row["params"] == canonical_json(META["params"])
    assert (row["model"], row["dataset"], row["explainer"], row["sample_id"]) == ("shapes_cnn", "shapes", "saliency", 4)
    assert (row["label"], row["target"], row["prediction"], row["confidence"]) == (2, 1, 1, 0.75)
    assert pd.isna(row["label_name"]) and pd.isna(row["prediction_name"])  # no names given: empty, not made up
    named = export(store, image_run, k=0, model_classes={"shapes_cnn": ["m0", "m1", "m2"]}).iloc[0]
    assert (named["label_name"], named["target_name"], named["prediction_name"]) == ("m2", "m1", "m1")
    assert (row["deletion_auc"], row["metric_label"]) == (0.125, 9.0)
    # values 3.0 at (0,2)=2 and (1,0)=3 tie: the lower index first; then 1.0 at (1,2)=5
    assert [row[f"top{j}_index"] for j in (1, 2, 3)] == [2, 3, 5]
    assert [(row[f"top{j}_row"], row[f"top{j}_col"]) for j in (1, 2, 3)] == [(0, 2), (1, 0), (1, 2)]
    assert [row[f"top{j}_value"] for j in (1, 2, 3)] == [3.0, 3.0, 1.0]


def test_export_all_mixes_image_and_tabular_rows_and_filters(store: Store):
    image_run, tab_run = _hand_run(store)
    frame = export(store, k=6)
    assert frame["run_key"].tolist() == [image_run, tab_run]
    tab = frame.iloc[1]
    assert [tab[f"top{j}_index"] for j in (1, 2, 3, 4)] == [2, 3, 0, 1]
    assert tab["top1_value"] == pytest.approx(0.7) and pd.isna(tab["top1_row"]) and pd.isna(tab["top5_index"])
    assert frame.iloc[0]["top6_index"] == 1 and pd.isna(frame.iloc[0]["insertion_auc"])
    assert export(store, model="bc_mlp")["run_key"].tolist() == [tab_run]
    assert export(store, dataset="shapes", explainer="saliency")["run_key"].tolist() == [image_run]
    assert len(export(store, explainer="gradcam")) == 0
    with pytest.raises(ValueError, match="k .* must be an integer"):
        export(store, k=-1)


def test_export_writes_csv_parquet_and_npz(store: Store, tmp_path: Path):
    key, items = _put(store, META, [3, 1], shape=(5, 5))
    frame = export(store, key, k=2, csv=tmp_path / "o.csv", parquet=tmp_path / "o.parquet", maps=tmp_path / "m.npz")
    from_csv = pd.read_csv(tmp_path / "o.csv")
    assert list(from_csv.columns) == list(frame.columns) and from_csv["sample_id"].tolist() == [3, 1]
    assert np.allclose(from_csv["top1_value"], frame["top1_value"].astype(float))
    from_parquet = pd.read_parquet(tmp_path / "o.parquet")
    assert from_parquet["top2_index"].tolist() == frame["top2_index"].tolist()
    with np.load(tmp_path / "m.npz") as npz:
        assert sorted(npz.files) == sorted([f"{key}_3", f"{key}_1"])
        for item in items:
            assert npz[f"{key}_{item.sample_id}"].tobytes() == item.map.tobytes()
