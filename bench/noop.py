"""A job that does nothing: the baseline for what one worker process can run."""


def noop(*args) -> None:
    return None
