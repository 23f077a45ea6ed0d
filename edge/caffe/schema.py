"""The part of Caffe's caffe.proto that classification nets use, built as protobuf descriptors at import time.

Why descriptors built here rather than a .proto file or a checked-in `caffe_pb2.py`: a .proto needs protoc at
build time, and a generated module is tied to the protobuf release that generated it (newer gencode refuses
older runtimes), while `descriptor_pb2` + `message_factory` work the same on every protobuf >= 4.21 we support.
Field numbers, types and defaults are those of BVLC caffe.proto (see shared/reference/caffe_fields.md).
Parameters of layers edge cannot convert (data, loss, ...) are left out: the binary reader keeps them as
unknown fields and skips them; in a prototxt they are an error, as is any misspelt field.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "int32": _F.TYPE_INT32, "uint32": _F.TYPE_UINT32, "int64": _F.TYPE_INT64, "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING,
}
_PACKED = {("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "diff"), ("BlobProto", "double_data"),
           ("BlobProto", "double_diff")}

ENUMS = {
    "Phase": {"TRAIN": 0, "TEST": 1},
    "DimCheckMode": {"STRICT": 0, "PERMISSIVE": 1},
    "VarianceNorm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2},
    "Engine": {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2},
    "PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "RoundMode": {"CEIL": 0, "FLOOR": 1},
    "NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "LayerType": {
        "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
        "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
        "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
        "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
        "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
        "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22,
        "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
    },
}

# V1 enum type -> V2 type string (upgrade_proto.cpp UpgradeV1LayerType)
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution",
    "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power",
    "RELU": "ReLU", "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# message -> [(field, number, label, type, default)]; label "?" optional, "*" repeated
MESSAGES: dict[str, list[tuple]] = {
    "BlobShape": [("dim", 1, "*", "int64", None)],
    "BlobProto": [
        ("num", 1, "?", "int32", None), ("channels", 2, "?", "int32", None), ("height", 3, "?", "int32", None),
        ("width", 4, "?", "int32", None), ("data", 5, "*", "float", None), ("diff", 6, "*", "float", None),
        ("shape", 7, "?", "BlobShape", None), ("double_data", 8, "*", "double", None),
        ("double_diff", 9, "*", "double", None),
    ],
    "NetState": [
        ("phase", 1, "?", "Phase", "TEST"), ("level", 2, "?", "int32", None), ("stage", 3, "*", "string", None),
    ],
    "NetStateRule": [
        ("phase", 1, "?", "Phase", None), ("min_level", 2, "?", "int32", None), ("max_level", 3, "?", "int32", None),
        ("stage", 4, "*", "string", None), ("not_stage", 5, "*", "string", None),
    ],
    "ParamSpec": [
        ("name", 1, "?", "string", None), ("share_mode", 2, "?", "DimCheckMode", None),
        ("lr_mult", 3, "?", "float", "1"), ("decay_mult", 4, "?", "float", "1"),
    ],
    "FillerParameter": [
        ("type", 1, "?", "string", "constant"), ("value", 2, "?", "float", "0"), ("min", 3, "?", "float", "0"),
        ("max", 4, "?", "float", "1"), ("mean", 5, "?", "float", "0"), ("std", 6, "?", "float", "1"),
        ("sparse", 7, "?", "int32", "-1"), ("variance_norm", 8, "?", "VarianceNorm", "FAN_IN"),
    ],
    "TransformationParameter": [
        ("scale", 1, "?", "float", "1"), ("mirror", 2, "?", "bool", "false"), ("crop_size", 3, "?", "uint32", "0"),
        ("mean_file", 4, "?", "string", None), ("mean_value", 5, "*", "float", None),
        ("force_color", 6, "?", "bool", "false"), ("force_gray", 7, "?", "bool", "false"),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, "?", "uint32", None), ("bias_term", 2, "?", "bool", "true"), ("pad", 3, "*", "uint32", None),
        ("kernel_size", 4, "*", "uint32", None), ("group", 5, "?", "uint32", "1"), ("stride", 6, "*", "uint32", None),
        ("weight_filler", 7, "?", "FillerParameter", None), ("bias_filler", 8, "?", "FillerParameter", None),
        ("pad_h", 9, "?", "uint32", "0"), ("pad_w", 10, "?", "uint32", "0"), ("kernel_h", 11, "?", "uint32", None),
        ("kernel_w", 12, "?", "uint32", None), ("stride_h", 13, "?", "uint32", None),
        ("stride_w", 14, "?", "uint32", None), ("engine", 15, "?", "Engine", "DEFAULT"),
        ("axis", 16, "?", "int32", "1"), ("force_nd_im2col", 17, "?", "bool", "false"),
        ("dilation", 18, "*", "uint32", None),
    ],
    "PoolingParameter": [
        ("pool", 1, "?", "PoolMethod", "MAX"), ("kernel_size", 2, "?", "uint32", None),
        ("stride", 3, "?", "uint32", "1"),
        ("pad", 4, "?", "uint32", "0"), ("kernel_h", 5, "?", "uint32", None), ("kernel_w", 6, "?", "uint32", None),
        ("stride_h", 7, "?", "uint32", None), ("stride_w", 8, "?", "uint32", None), ("pad_h", 9, "?", "uint32", "0"),
        ("pad_w", 10, "?", "uint32", "0"), ("engine", 11, "?", "Engine", "DEFAULT"),
        ("global_pooling", 12, "?", "bool", "false"), ("round_mode", 13, "?", "RoundMode", "CEIL"),
        # Forks (BVLC PR #3057, OpenCV, DenseNet-Caffe) use 13 for `ceil_mode`; BVLC took 13 for round_mode. Layer
        # parameters are only ever read from the prototxt (text), where the name tells them apart, so the fork's
        # field gets a number of its own here (Netron does the same).
        ("ceil_mode", 1013, "?", "bool", "true"),
    ],
    "InnerProductParameter": [
        ("num_output", 1, "?", "uint32", None), ("bias_term", 2, "?", "bool", "true"),
        ("weight_filler", 3, "?", "FillerParameter", None), ("bias_filler", 4, "?", "FillerParameter", None),
        ("axis", 5, "?", "int32", "1"), ("transpose", 6, "?", "bool", "false"),
    ],
    "LRNParameter": [
        ("local_size", 1, "?", "uint32", "5"), ("alpha", 2, "?", "float", "1"), ("beta", 3, "?", "float", "0.75"),
        ("norm_region", 4, "?", "NormRegion", "ACROSS_CHANNELS"), ("k", 5, "?", "float", "1"),
        ("engine", 6, "?", "Engine", "DEFAULT"),
    ],
    "ConcatParameter": [("concat_dim", 1, "?", "uint32", "1"), ("axis", 2, "?", "int32", "1")],
    "EltwiseParameter": [
        ("operation", 1, "?", "EltwiseOp", "SUM"), ("coeff", 2, "*", "float", None),
        ("stable_prod_grad", 3, "?", "bool", "true"),
    ],
    "BatchNormParameter": [
        ("use_global_stats", 1, "?", "bool", None), ("moving_average_fraction", 2, "?", "float", "0.999"),
        ("eps", 3, "?", "float", "1e-05"),
    ],
    "ScaleParameter": [
        ("axis", 1, "?", "int32", "1"), ("num_axes", 2, "?", "int32", "1"), ("filler", 3, "?", "FillerParameter", None),
        ("bias_term", 4, "?", "bool", "false"), ("bias_filler", 5, "?", "FillerParameter", None),
    ],
    "BiasParameter": [
        ("axis", 1, "?", "int32", "1"), ("num_axes", 2, "?", "int32", "1"), ("filler", 3, "?", "FillerParameter", None),
    ],
    "ReLUParameter": [("negative_slope", 1, "?", "float", "0"), ("engine", 2, "?", "Engine", "DEFAULT")],
    "PReLUParameter": [("filler", 1, "?", "FillerParameter", None), ("channel_shared", 2, "?", "bool", "false")],
    "DropoutParameter": [("dropout_ratio", 1, "?", "float", "0.5")],
    "SoftmaxParameter": [("engine", 1, "?", "Engine", "DEFAULT"), ("axis", 2, "?", "int32", "1")],
    "FlattenParameter": [("axis", 1, "?", "int32", "1"), ("end_axis", 2, "?", "int32", "-1")],
    "ReshapeParameter": [
        ("shape", 1, "?", "BlobShape", None), ("axis", 2, "?", "int32", "0"), ("num_axes", 3, "?", "int32", "-1"),
    ],
    "InputParameter": [("shape", 1, "*", "BlobShape", None)],
    "SliceParameter": [
        ("slice_dim", 1, "?", "uint32", "1"), ("slice_point", 2, "*", "uint32", None), ("axis", 3, "?", "int32", "1"),
    ],
    "PowerParameter": [
        ("power", 1, "?", "float", "1"), ("scale", 2, "?", "float", "1"), ("shift", 3, "?", "float", "0"),
    ],
    "ELUParameter": [("alpha", 1, "?", "float", "1")],
    "SigmoidParameter": [("engine", 1, "?", "Engine", "DEFAULT")],
    "TanHParameter": [("engine", 1, "?", "Engine", "DEFAULT")],
}

# (field, V2 LayerParameter number, V1LayerParameter number or None, type)
_LAYER_PARAMS = [
    ("transform_param", 100, 36, "TransformationParameter"), ("concat_param", 104, 9, "ConcatParameter"),
    ("convolution_param", 106, 10, "ConvolutionParameter"), ("dropout_param", 108, 12, "DropoutParameter"),
    ("eltwise_param", 110, 24, "EltwiseParameter"), ("inner_product_param", 117, 17, "InnerProductParameter"),
    ("lrn_param", 118, 18, "LRNParameter"), ("pooling_param", 121, 19, "PoolingParameter"),
    ("power_param", 122, 21, "PowerParameter"), ("relu_param", 123, 30, "ReLUParameter"),
    ("sigmoid_param", 124, 38, "SigmoidParameter"), ("softmax_param", 125, 39, "SoftmaxParameter"),
    ("slice_param", 126, 31, "SliceParameter"), ("tanh_param", 127, 37, "TanHParameter"),
    ("prelu_param", 131, None, "PReLUParameter"), ("reshape_param", 133, None, "ReshapeParameter"),
    ("flatten_param", 135, None, "FlattenParameter"), ("batch_norm_param", 139, None, "BatchNormParameter"),
    ("elu_param", 140, None, "ELUParameter"), ("bias_param", 141, None, "BiasParameter"),
    ("scale_param", 142, None, "ScaleParameter"), ("input_param", 143, None, "InputParameter"),
]
V1_PARAMS = [name for name, _, v1, _ in _LAYER_PARAMS if v1 is not None]

MESSAGES["LayerParameter"] = [
    ("name", 1, "?", "string", None), ("type", 2, "?", "string", None), ("bottom", 3, "*", "string", None),
    ("top", 4, "*", "string", None), ("loss_weight", 5, "*", "float", None), ("param", 6, "*", "ParamSpec", None),
    ("blobs", 7, "*", "BlobProto", None), ("include", 8, "*", "NetStateRule", None),
    ("exclude", 9, "*", "NetStateRule", None), ("phase", 10, "?", "Phase", None),
    ("propagate_down", 11, "*", "bool", None),
] + [(name, number, "?", kind, None) for name, number, _, kind in _LAYER_PARAMS]
MESSAGES["V1LayerParameter"] = [
    ("bottom", 2, "*", "string", None), ("top", 3, "*", "string", None), ("name", 4, "?", "string", None),
    ("type", 5, "?", "LayerType", None), ("blobs", 6, "*", "BlobProto", None), ("blobs_lr", 7, "*", "float", None),
    ("weight_decay", 8, "*", "float", None), ("include", 32, "*", "NetStateRule", None),
    ("exclude", 33, "*", "NetStateRule", None), ("loss_weight", 35, "*", "float", None),
    ("param", 1001, "*", "string", None), ("blob_share_mode", 1002, "*", "DimCheckMode", None),
] + [(name, v1, "?", kind, None) for name, _, v1, kind in _LAYER_PARAMS if v1 is not None]
MESSAGES["NetParameter"] = [
    ("name", 1, "?", "string", None), ("layers", 2, "*", "V1LayerParameter", None), ("input", 3, "*", "string", None),
    ("input_dim", 4, "*", "int32", None), ("force_backward", 5, "?", "bool", "false"),
    ("state", 6, "?", "NetState", None), ("debug_info", 7, "?", "bool", "false"),
    ("input_shape", 8, "*", "BlobShape", None),
    ("layer", 100, "*", "LayerParameter", None),
]


def _add_enum(enums, name: str) -> None:
    enum = enums.add(name=name)
    for value_name, number in ENUMS[name].items():
        enum.value.add(name=value_name, number=number)


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    # "edge_caffe" rather than "caffe": a process that also imports a real caffe_pb2 keeps both pools apart.
    file = descriptor_pb2.FileDescriptorProto(name="edge_caffe.proto", package="edge_caffe", syntax="proto2")
    _add_enum(file.enum_type, "Phase")
    for message_name, fields in MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for name, number, label, kind, default in fields:
            field = message.field.add(name=name, number=number)
            field.label = _F.LABEL_REPEATED if label == "*" else _F.LABEL_OPTIONAL
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            elif kind == "Phase":
                field.type, field.type_name = _F.TYPE_ENUM, ".edge_caffe.Phase"
            elif kind in ENUMS:  # nested, as in caffe.proto: enum value names are scoped like C++ (MAX twice)
                if kind not in {enum.name for enum in message.enum_type}:
                    _add_enum(message.enum_type, kind)
                field.type, field.type_name = _F.TYPE_ENUM, f".edge_caffe.{message_name}.{kind}"
            else:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".edge_caffe.{kind}"
            if default is not None:
                field.default_value = default
            if (message_name, name) in _PACKED:
                field.options.packed = True
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file_descriptor())
_classes = {name: message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"edge_caffe.{name}"))
            for name in MESSAGES}

NetParameter = _classes["NetParameter"]
LayerParameter = _classes["LayerParameter"]
V1LayerParameter = _classes["V1LayerParameter"]
BlobProto = _classes["BlobProto"]
BlobShape = _classes["BlobShape"]
