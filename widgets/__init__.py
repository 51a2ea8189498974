"""sfhkit.widgets: ipywidgets + bokeh panels built only on sfhkit's public API.

The panels arrive with issue 7 (the explorer).  This package exists now so the layout and the
`sfhkit.widgets` import name are fixed from the start; the core (sfhkit/) never imports it.
"""
