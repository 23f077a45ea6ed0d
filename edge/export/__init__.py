"""`edge export`: a model folder handed to the servers that outgrow one device.

    triton.py         a Triton Inference Server model repository (config.pbtxt, version folders, the ensemble)
    triton_python.py  the Python-backend models of that repository: edge's preprocessing, and the whole model
                      folder on ONNX Runtime where no native backend fits; runs inside Triton's Python stub
    deepstream.py     a DeepStream Gst-nvinfer configuration file for a classifier
"""
