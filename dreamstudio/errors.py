"""Errors a person sees. Each message says what is wrong and what to do."""


class DreamStudioError(Exception):
    """Base class for errors whose message is meant for the user, not a traceback."""


class ModelLoadError(DreamStudioError):
    """The base model could not be loaded."""


class InputError(DreamStudioError):
    """A file, folder or setting given by the user is unusable."""


class TrainingError(DreamStudioError):
    """A training run could not start or had to stop."""
