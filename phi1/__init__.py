"""phi-1 reproduction: the model, its LightningModule, data modules, generation and HF interop."""
