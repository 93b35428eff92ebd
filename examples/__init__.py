"""Examples for redflow-mp (run ``python examples/demo.py``)."""
