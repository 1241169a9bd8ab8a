"""Figure and table builders for the pages: pure functions of arrays, tested without Streamlit."""
