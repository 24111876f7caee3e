"""Actor-critic trained in imagination (DreamerV3 defaults), lambda returns, return normalisation."""
