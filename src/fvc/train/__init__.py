"""Training one (model, fold): the loop and its checkpoints."""
