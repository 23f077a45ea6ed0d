"""The Python-backend models `edge export --triton` writes, run by Triton's Python stub (model.py imports them).

Each version folder of these models holds the model folder's card (and its labels, mean image and ONNX variant),
so that what runs inside Triton is edge's own code on edge's own card: the same preprocessing as `edge run`, and
ONNX Runtime where the server has no native backend for the model. The server's Python needs edge installed.

triton_python_backend_utils exists only inside the stub, so it is imported there, in execute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import EdgeError
from ..folder import Card
from ..model import Model
from ..preprocess import preprocess

FRAME = "frame"  # camera frames in: uint8 HWC BGR, any size (the preprocessing model's and the ensemble's input)


def _version_folder(args: dict) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


class PreprocessModel:
    """uint8 HWC BGR frames of any size -> the model's float32 input, by the card's preprocessing."""

    def initialize(self, args: dict) -> None:
        self.output = json.loads(args["model_config"])["output"][0]["name"]
        self.spec = Card.read(_version_folder(args)).preprocess

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, FRAME).as_numpy()
            try:
                inputs = np.stack([preprocess(frame, self.spec) for frame in frames])
            except EdgeError as e:  # a frame preprocessing refuses (1 pixel wide): this request fails, not others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, inputs)]))
        return responses


class OnnxRuntimeModel:
    """The model folder on ONNX Runtime, for a server without its ONNX Runtime backend (the one in the PyPI
    package nvidia-pytriton, say). The requests Triton batched together are run as one batch."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        precision = config["parameters"]["precision"]["string_value"]
        self.model = Model.load(_version_folder(args), precision=precision)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        card = self.model.card
        inputs = [pb_utils.get_input_tensor_by_name(request, card.input_name).as_numpy() for request in requests]
        outputs = self.model.backend.run(np.concatenate(inputs))
        ends = np.cumsum([len(batch) for batch in inputs])
        return [pb_utils.InferenceResponse([pb_utils.Tensor(card.output_name, np.ascontiguousarray(part))])
                for part in np.split(outputs, ends[:-1])]
