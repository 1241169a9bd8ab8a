"""Loupe's Streamlit entry point: the page router. Layout only; run with ``streamlit run app.py``."""
import streamlit as st

st.set_page_config(page_title="Loupe", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/pathways.py", title="Pathways", icon=":material/account_tree:", url_path="pathways"),
]

st.navigation(PAGES).run()
