"""torch -> TensorFlow graph (NHWC) for ``tf.lite.TFLiteConverter``: a small translator from a
torch.fx trace of the BN-folded model.

Why a translator of our own rather than a converter package (checked 2026-11 with
``pip install --dry-run`` into the project venv):

- ``litert-torch`` 0.10.0 (torch -> TFLite directly) would downgrade pydantic 2.14 -> 2.11 and
  typing_extensions, and pulls jax, transformers, kagglehub and ai-edge-quantizer;
- ``onnx2tf`` 1.29 pins tensorflow 2.19, numpy 1.26, onnx 1.19, onnxruntime 1.23 and protobuf 4.25
  (every one a downgrade of the pinned set);
- ``nobuco`` 0.17 installs cleanly but imports ``keras.src.engine`` (Keras 2); TF 2.21 ships Keras 3.

The zoo and the user models we accept use a small op set (conv incl. depthwise/grouped/dilated,
batch norm, ReLU/ReLU6/hardtanh and a few other activations, add/mul, concat, max/avg/adaptive
pooling, mean, flatten, linear, dropout), so each fx node becomes one or two ``tf.nn`` ops inside a
``tf.function`` whose input is NHWC. Plain TF ops rather than Keras layers because they express
torch's explicit (asymmetric-free) padding exactly and because fake-quant ops for QAT models are
plain ops too. TFLiteConverter then fuses conv+bias+activation and does every precision.

Layout: 4-D tensors live in NHWC; a torch dim ``d`` of a 4-D tensor maps to TF axis
``NCHW_TO_NHWC[d]``. A flatten of a feature map larger than 1x1 transposes back to NCHW first so
the classifier's weights keep their meaning.

QAT: ``fake_quant`` maps node -> (min, max); a ``FakeQuantWithMinMaxArgs`` op with that range
follows the node, and TFLiteConverter turns the graph into int8 without a representative data set.

Anything outside the op set raises ``TargetError`` naming the operator, the layer and the format.
"""

from edgeship.targets.torch2tf.lowering import Lowering
from edgeship.targets.torch2tf.trace import FMT, NCHW_TO_NHWC, SUPPORTED, observe_ranges, shape, trace, unsupported

__all__ = ["FMT", "NCHW_TO_NHWC", "SUPPORTED", "Lowering", "observe_ranges", "shape", "trace", "unsupported"]
