"""The HTTP layer: routes, limits, identities, metrics and the widget's files."""
