def is_gpu_available(*args, **kwargs):
    """heareval refuses to start without a GPU unless this returns True; PyTorch picks
    the device itself, so the answer here only keeps that check out of the way."""
    return True
