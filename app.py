"""Loupe's Streamlit entry point: the page router. Layout only; run with ``streamlit run app.py``."""
import streamlit as st

from views.access import require_access

st.set_page_config(page_title="Loupe", page_icon=":material/search:", layout="wide")
require_access()  # optional login or token gate for shared deployments (views/access.py)

PAGES = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/explain.py", title="Explain", icon=":material/image_search:", url_path="explain"),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("app_pages/pathways.py", title="Pathways", icon=":material/hub:", url_path="pathways"),
    st.Page("app_pages/rules.py", title="Rules", icon=":material/account_tree:", url_path="rules"),
    st.Page("app_pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:", url_path="embeddings"),
    st.Page("app_pages/sanity.py", title="Sanity check", icon=":material/fact_check:", url_path="sanity"),
    st.Page("app_pages/batch.py", title="Batch", icon=":material/playlist_play:", url_path="batch"),
    st.Page("app_pages/registry.py", title="Registry", icon=":material/inventory_2:", url_path="registry"),
]

st.navigation(PAGES).run()
