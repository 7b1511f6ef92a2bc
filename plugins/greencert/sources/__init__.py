"""Sources write evidence bundles: the simulator, Prometheus, grid-intensity APIs."""
