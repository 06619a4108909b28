"""Views of a run record: console tables (console.py) and the self-contained HTML page (html.py, plots.py)."""
