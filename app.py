"""Loupe's Streamlit entry point: the page router. Layout only; run with ``streamlit run app.py``."""
import streamlit as st

from views.access import require_access

st.set_page_config(page_title="Loupe", page_icon=":material/search:", layout="wide")
require_access()  # optional login or token gate for shared deployments (views/access.py)

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
]

st.navigation(PAGES).run()
