"""DVC stages: one thin module each (``python -m stages.<name>``) over the ``flanmoe`` library."""
