"""Operations: run directories, plots, checkpoints, tracking."""
