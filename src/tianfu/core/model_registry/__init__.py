"""Which version of each model is registered and active; the modules load whatever is active."""
