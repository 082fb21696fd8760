"""Tools over the same partition task: simulate, replay, export, the demo."""
