"""Networks and world models: DRAW (autoregressive categorical latents), the latent residual."""
