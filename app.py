"""Loupe's Streamlit entry point: the page router. Layout only; run with ``streamlit run app.py``."""
import streamlit as st

from views.access import account_menu, require_access

st.set_page_config(page_title="Loupe", page_icon=":material/search:", layout="wide")
require_access(router=True)  # optional login or token gate for shared deployments (views/access.py)
account_menu()

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/explain.py", title="Explain", icon=":material/image_search:", url_path="explain"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("pages/pathways.py", title="Pathways", icon=":material/hub:", url_path="pathways"),
    st.Page("pages/rules.py", title="Rules", icon=":material/account_tree:", url_path="rules"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:", url_path="embeddings"),
    st.Page("pages/sanity.py", title="Sanity check", icon=":material/fact_check:", url_path="sanity"),
    st.Page("pages/batch.py", title="Batch", icon=":material/playlist_play:", url_path="batch"),
    st.Page("pages/registry.py", title="Registry", icon=":material/inventory_2:", url_path="registry"),
]

st.navigation(PAGES).run()
